import ClusterRuntime
import Foundation
import LlamaCore
import Orchestrator
import Synchronization
import SwiftProtobuf
import Testing
import Transport
import Wire

/// Bad frames of every kind sent to a live coordinator over a socket: each answered with an ERROR that
/// names the problem, counted by reason in the status and the metrics, and the coordinator keeps serving.
@Suite struct BadInputTests {
    /// Frames of a valid message whose envelope is re-encoded after `edit` (checksum recomputed).
    static func frames(editing edit: (inout Rlhf_V1_Envelope) -> Void) throws -> [[UInt8]] {
        var frames = try WireMessage(type: .statusRequest, requestID: 5, body: Rlhf_V1_StatusRequest()).frames()
        var envelope = try Rlhf_V1_Envelope(serializedBytes: Array(frames[0].dropFirst(4)))
        edit(&envelope)
        var options = BinaryEncodingOptions()
        options.useDeterministicOrdering = true
        let encoded: [UInt8] = try envelope.serializedBytes(options: options)
        frames[0] = withUnsafeBytes(of: CRC32C.checksum(encoded).littleEndian) { Array($0) } + encoded
        return frames
    }

    @Test func everyKindOfBadFrameIsRefusedCountedAndSurvived() throws {
        var settings = Coordinator.Settings(bind: "tcp://127.0.0.1:*")
        settings.maxFrameBytes = 1 << 20
        settings.metricsBind = "tcp://127.0.0.1:*"
        let coordinator = try Coordinator(settings: settings)
        defer { coordinator.shutdown() }
        let loop = try PollLoop()
        defer { loop.shutdown() }
        let replies = Mutex<[WireMessage]>([])
        let (socket, _) = try loop.open(.dealer, connect: [coordinator.endpoint]) { frames in
            if let m = try? WireMessage.decode(frames) { replies.withLock { $0.append(m) } }
        }
        let valid = try WireMessage(type: .statusRequest, requestID: 5, body: Rlhf_V1_StatusRequest()).frames()
        var flipped = valid
        flipped[0][6] ^= 0x10
        var heartbeat = Rlhf_V1_Heartbeat()
        heartbeat.workerID = "nobody"
        var corruptBody = try WireMessage(type: .heartbeat, requestID: 6, body: heartbeat).frames()
        corruptBody[1][0] ^= 0x01
        var rng = SeededGenerator(seed: 3)
        let cases: [(String, [[UInt8]])] = [
            ("truncated", [valid[0]]),
            ("checksum", flipped),
            ("checksum", corruptBody),
            ("truncated", [valid[0], [1, 2, 3]]),
            ("oversized", [valid[0], [UInt8](repeating: 7, count: (1 << 20) + 1)]),
            ("wrong_version", try BadInputTests.frames { $0.protocolVersion = 99 }),
            ("unknown_type", try BadInputTests.frames { $0.type = Rlhf_V1_MessageType(rawValue: 77)! }),
            ("malformed", try BadInputTests.frames { $0.magic = 0x1234_5678 }),
            ("checksum", [(0..<40).map { _ in UInt8(truncatingIfNeeded: rng.next()) }, (0..<10).map { _ in UInt8(truncatingIfNeeded: rng.next()) }]),
        ]
        for (i, (reason, frames)) in cases.enumerated() {
            loop.send(socket, frames)
            #expect(ClusterProcessTests.waitFor(5) { replies.withLock { $0.count } == i + 1 }, "case \(i) (\(reason)) got no answer")
            let answer = replies.withLock { $0.last }
            #expect(answer?.type == .error, "case \(i) (\(reason))")
            let text = (try? answer?.decodeBody(Rlhf_V1_Error.self).message) ?? ""
            #expect(!text.isEmpty, "case \(i): the refusal names no reason")
        }
        // Counted by reason, in the status and the metrics.
        let status = coordinator.status()
        let counts = Dictionary(uniqueKeysWithValues: status.rejectedFrames.map { ($0.reason, Int($0.count)) })
        let expected = Dictionary(cases.map { ($0.0, 1) }, uniquingKeysWith: +)
        #expect(counts == expected, "\(counts)")
        let metrics = coordinator.metrics()
        #expect(metrics.contains("rlhf_frames_rejected_total{reason=\"checksum\"} 3"))
        #expect(metrics.contains("rlhf_frames_rejected_total{reason=\"truncated\"} 2"))
        #expect(metrics.contains("rlhf_frames_rejected_total{reason=\"wrong_version\"} 1"))
        // And it still serves.
        loop.send(socket, valid)
        #expect(ClusterProcessTests.waitFor(5) { replies.withLock { $0.last?.type == .statusReply } })
    }
}
