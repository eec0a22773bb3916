import Foundation
import LlamaCore
import SwiftProtobuf
import Testing
import Wire

/// Fuzzing the envelope and every body decoder: mutated valid messages, random frames and random bodies.
/// Nothing may crash; every input is either decoded or refused with an error. `RLHF_FUZZ_ITERATIONS`
/// raises the count for a longer run (README: "Fuzzing").
@Suite struct FuzzTests {
    static var iterations: Int {
        ProcessInfo.processInfo.environment["RLHF_FUZZ_ITERATIONS"].flatMap(Int.init) ?? 120_000
    }

    /// Every body type, as `decodeBody` would parse it.
    static let bodyTypes: [any SwiftProtobuf.Message.Type] = [
        Rlhf_V1_Register.self, Rlhf_V1_RegisterAck.self, Rlhf_V1_Heartbeat.self, Rlhf_V1_HeartbeatAck.self, Rlhf_V1_StatusRequest.self,
        Rlhf_V1_StatusReply.self, Rlhf_V1_Shutdown.self, Rlhf_V1_Error.self, Rlhf_V1_GenerateRequest.self,
        Rlhf_V1_GenerateResult.self, Rlhf_V1_ScoreRequest.self, Rlhf_V1_ScoreResult.self, Rlhf_V1_ReferenceLogProbRequest.self,
        Rlhf_V1_ReferenceLogProbResult.self, Rlhf_V1_TrainBatch.self, Rlhf_V1_TrainStats.self, Rlhf_V1_WeightAnnounce.self,
        Rlhf_V1_WeightChunkRequest.self, Rlhf_V1_WeightChunk.self, Rlhf_V1_RemoteCall.self, Rlhf_V1_RemoteReply.self,
        Rlhf_V1_Envelope.self,
    ]

    /// One mutation of `frames`: bit flips, byte changes, truncation, extension, frames dropped, added
    /// or swapped, or an entirely random frame.
    static func mutate(_ frames: [[UInt8]], _ rng: inout SeededGenerator) -> [[UInt8]] {
        var out = frames
        func randomBytes(_ n: Int) -> [UInt8] { (0..<n).map { _ in UInt8(truncatingIfNeeded: rng.next()) } }
        for _ in 0..<(1 + Int(rng.next() % 3)) {
            guard !out.isEmpty else { out.append(randomBytes(Int(rng.next() % 64))); continue }
            let f = Int(rng.next() % UInt64(out.count))
            switch rng.next() % 8 {
            case 0, 1:
                if !out[f].isEmpty { out[f][Int(rng.next() % UInt64(out[f].count))] ^= UInt8(1 << (rng.next() % 8)) }
            case 2:
                if !out[f].isEmpty { out[f][Int(rng.next() % UInt64(out[f].count))] = UInt8(truncatingIfNeeded: rng.next()) }
            case 3: out[f] = Array(out[f].prefix(Int(rng.next() % UInt64(out[f].count + 1))))
            case 4: out[f] += randomBytes(1 + Int(rng.next() % 32))
            case 5: out.remove(at: f)
            case 6: out.insert(randomBytes(Int(rng.next() % 128)), at: f)
            default: out[f] = randomBytes(Int(rng.next() % 256))
            }
        }
        return out
    }

    @Test func envelopeAndBodiesSurviveMutationsAndRandomBytes() throws {
        var rng = SeededGenerator(seed: 2026)
        let valid = try CPeerTests.samples().map { type, body in
            try WireMessage(type: type, requestID: 7, body: body, tensors: [WireTensor(name: "t", floats: [1, 2, 3])]).frames()
        }
        var decoded = 0, refused = 0
        let n = FuzzTests.iterations
        for i in 0..<n {
            let frames: [[UInt8]]
            if i % 4 == 3 {
                frames = (0..<(Int(rng.next() % 4))).map { _ in (0..<Int(rng.next() % 96)).map { _ in UInt8(truncatingIfNeeded: rng.next()) } }
            } else {
                frames = FuzzTests.mutate(valid[i % valid.count], &rng)
            }
            do {
                let message = try WireMessage.decode(frames, maxFrameBytes: 1 << 16)
                decoded += 1
                // A message that survives the checksums must still decode (or refuse) as every body type.
                for type in FuzzTests.bodyTypes { _ = try? type.init(serializedBytes: message.body) }
            } catch {
                refused += 1
            }
            // The body decoders on their own, past the checksums: random and mutated bytes.
            let body = i % 2 == 0 ? (frames.last ?? []) : (0..<Int(rng.next() % 64)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            let type = FuzzTests.bodyTypes[i % FuzzTests.bodyTypes.count]
            _ = try? type.init(serializedBytes: body)
        }
        #expect(decoded + refused == n)
        // Mutations of checksummed frames are refused, save the few that leave the message intact
        // (e.g. a dropped empty frame).
        #expect(refused > n * 9 / 10, "\(refused) of \(n) refused")
    }
}
