import Foundation
import Testing
import Transport
@testable import Wire

/// Real sockets on 127.0.0.1.
@Suite struct ZeroMQTests {
    @Test func routerDealerRoundTripOfAWireMessage() throws {
        let context = try ZMQContext()
        defer { context.terminate() }
        let router = try ZMQSocket(context: context, kind: .router)
        let dealer = try ZMQSocket(context: context, kind: .dealer, identity: Array("worker-1".utf8))
        defer { dealer.close(); router.close() }
        let endpoint = try router.bind("tcp://127.0.0.1:*")
        #expect(endpoint.hasPrefix("tcp://127.0.0.1:"))
        try dealer.connect(endpoint)
        let message = try WireTests.sampleMessage()
        try dealer.send(try message.frames())
        #expect(try router.poll(timeoutMilliseconds: 5000))
        let received = try #require(try router.receive())
        #expect(received.first == Array("worker-1".utf8))
        let decoded = try WireMessage.decode(Array(received.dropFirst()))
        #expect(decoded.requestID == 42)
        // Reply through the identity.
        try router.send([received[0]] + (try decoded.frames()))
        #expect(try dealer.poll(timeoutMilliseconds: 5000))
        let back = try WireMessage.decode(try #require(try dealer.receive()))
        #expect(back.tensor("logprobs")?.floats == [-1.5, -0.25, -3])
    }

    @Test func routerRefusesUnknownPeers() throws {
        let context = try ZMQContext()
        defer { context.terminate() }
        let router = try ZMQSocket(context: context, kind: .router)
        defer { router.close() }
        _ = try router.bind("tcp://127.0.0.1:*")
        do {
            try router.send([Array("nobody".utf8), [1, 2, 3]], wait: false)
            Issue.record("a send to an unknown peer vanished silently")
        } catch let error as TransportError {
            #expect(error.hostUnreachable)
        }
        #expect(try router.getInt(ZMQ_LINGER_OPTION) == 0)
        #expect(try router.receive(wait: false) == nil)
    }
}

/// ZMQ_LINGER's value, for the test above (the C macro is not visible here).
let ZMQ_LINGER_OPTION: Int32 = 17
