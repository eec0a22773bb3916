import Foundation
import Synchronization
import Testing
import TestKit
import Transport
@testable import Wire

@Suite struct PollLoopTests {
    /// A ROUTER that echoes, a DEALER that counts replies; every request comes back exactly once.
    @Test func echoThroughTwoLoops() throws {
        let server = try PollLoop(), client = try PollLoop()
        defer { client.shutdown(); server.shutdown() }
        let serverSocket = Mutex<PollLoop.SocketID?>(nil)
        let (routerID, endpoints) = try server.open(.router, bind: ["tcp://127.0.0.1:*"]) { frames in
            // frames[0] is the peer's identity; echo the rest back to it.
            if let id = serverSocket.withLock({ $0 }) { server.send(id, frames) }
        }
        serverSocket.withLock { $0 = routerID }
        let received = Mutex<[UInt64]>([])
        let done = DispatchSemaphore(value: 0)
        let count = 200
        let (dealer, _) = try client.open(.dealer, connect: endpoints) { frames in
            guard let message = try? WireMessage.decode(frames) else { return }
            let total = received.withLock { $0.append(message.requestID); return $0.count }
            if total == count { done.signal() }
        }
        for i in 0..<count {
            var message = try TestKit.sampleMessage()
            message.requestID = UInt64(i)
            client.send(dealer, try message.frames())
        }
        #expect(done.wait(timeout: .now() + 10) == .success)
        #expect(received.withLock { $0.sorted() } == (0..<UInt64(count)).map { $0 })
    }

    @Test func failuresAreReported() throws {
        let loop = try PollLoop()
        defer { loop.shutdown() }
        let (router, _) = try loop.open(.router, bind: ["tcp://127.0.0.1:*"]) { _ in }
        let failed = DispatchSemaphore(value: 0)
        loop.send(router, [Array("ghost".utf8), [1]]) { error in
            if (error as? TransportError)?.hostUnreachable == true { failed.signal() }
        }
        #expect(failed.wait(timeout: .now() + 5) == .success)
        #expect(throws: TransportError.self) { try loop.open(.dealer, bind: ["not-an-endpoint"]) { _ in } }
    }
}
