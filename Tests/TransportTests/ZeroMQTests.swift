import Foundation
import Testing
import TestKit
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
        let message = try TestKit.sampleMessage()
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

/// The socket monitor's two frames, decoded (libzmq's numbers written out: a monitor message is a
/// 16-bit event and a 32-bit value, little-endian, then the endpoint).
@Suite struct SocketEventTests {
    static func frames(_ event: UInt16, _ value: UInt32, _ endpoint: String = "tcp://h:1") -> [[UInt8]] {
        [[UInt8(event & 0xFF), UInt8(event >> 8), UInt8(value & 0xFF), UInt8(value >> 8 & 0xFF), UInt8(value >> 16 & 0xFF), UInt8(value >> 24)],
         Array(endpoint.utf8)]
    }

    @Test func eventsAndHandshakeFailuresAreDecoded() {
        #expect(SocketEvent.decode(SocketEventTests.frames(0x0001, 7)) == SocketEvent(kind: .connected, endpoint: "tcp://h:1"))
        #expect(SocketEvent.decode(SocketEventTests.frames(0x0200, 7))?.kind == .disconnected)
        #expect(SocketEvent.decode(SocketEventTests.frames(0x1000, 0))?.kind == .handshakeSucceeded)
        #expect(SocketEvent.decode(SocketEventTests.frames(0x2000, 0x1100_0002))?.kind == .handshakeFailed(.mechanismMismatch))
        #expect(SocketEvent.decode(SocketEventTests.frames(0x2000, 0x1100_0001))?.kind == .handshakeFailed(.cryptographic))
        #expect(SocketEvent.decode(SocketEventTests.frames(0x2000, 0x1000_0000))?.kind == .handshakeFailed(.other(0x1000_0000)))
        #expect(SocketEvent.decode(SocketEventTests.frames(0x4000, 400))?.kind == .handshakeFailed(.refusedByServer(status: 400)))
        #expect(SocketEvent.decode(SocketEventTests.frames(0x0800, 32))?.kind == .handshakeFailed(.noDetail(errno: 32)))
        #expect(SocketEvent.decode(SocketEventTests.frames(0x0008, 0))?.kind == .other(0x0008))
        #expect(SocketEvent.decode([[1, 2, 3]]) == nil)
        #expect(SocketEvent.decode([[1, 2, 3], []]) == nil)
        // What a client is told names the keys at fault.
        #expect(SocketEvent.explain(.mechanismMismatch, peer: "c", clientUsesCurve: false).contains("requires CURVE encryption: give --curve-server"))
        #expect(SocketEvent.explain(.mechanismMismatch, peer: "c", clientUsesCurve: true).contains("does not use CURVE"))
        #expect(SocketEvent.explain(.refusedByServer(status: 400), peer: "c", clientUsesCurve: true, clientPublicKey: "K").contains("(public key K)"))
    }
}
