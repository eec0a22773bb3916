import CWirePeer
import Foundation
import LlamaCore
import SwiftProtobuf
import Testing
import TestKit
@testable import Wire

@Suite struct WireTests {
    static func sampleMessage() throws -> WireMessage { try TestKit.sampleMessage() }

    @Test func roundTrip() throws {
        let message = try WireTests.sampleMessage()
        let decoded = try WireMessage.decode(try message.frames())
        #expect(decoded.type == .generateRequest && decoded.requestID == 42 && decoded.round == 2 && decoded.step == 11)
        #expect(decoded.policyVersion == 3 && decoded.sender == "coordinator")
        let body = try decoded.decodeBody(Rlhf_V1_GenerateRequest.self)
        #expect(body.prompts.first?.ids == [1, 450, 3, 29] && body.samplesPerPrompt == 4)
        #expect(decoded.tensor("logprobs")?.floats == [-1.5, -0.25, -3])
    }

    /// Protobuf alone accepts most corrupted bytes; the checksums must catch every single-bit flip.
    @Test func everySingleBitFlipIsCaught() throws {
        let frames = try WireTests.sampleMessage().frames()
        var caught = 0, total = 0
        for f in frames.indices {
            for byte in frames[f].indices {
                for bit in 0..<8 {
                    var corrupted = frames
                    corrupted[f][byte] ^= UInt8(1 << bit)
                    total += 1
                    do { _ = try WireMessage.decode(corrupted) } catch is WireError { caught += 1 }
                }
            }
        }
        #expect(caught == total, "\(total - caught) of \(total) flips decoded as valid")
    }

    @Test func truncationAndStructureErrors() throws {
        let frames = try WireTests.sampleMessage().frames()
        #expect(throws: WireError.tooFewFrames(1)) { try WireMessage.decode(Array(frames.prefix(1))) }
        #expect(throws: WireError.tensorCount(expected: 1, actual: 0)) { try WireMessage.decode(Array(frames.prefix(2))) }
        var short = frames
        short[2].removeLast(4)
        #expect(throws: WireError.self) { try WireMessage.decode(short) }
        #expect(throws: WireError.frameTooLarge(index: 0, bytes: frames[0].count, limit: 8)) {
            try WireMessage.decode(frames, maxFrameBytes: 8)
        }
    }

    /// Re-encodes a valid envelope with one field changed (checksum recomputed).
    static func withEnvelope(_ frames: [[UInt8]], _ change: (inout Rlhf_V1_Envelope) -> Void) throws -> [[UInt8]] {
        var envelope = try Rlhf_V1_Envelope(serializedBytes: Array(frames[0][4...]))
        change(&envelope)
        let bytes: [UInt8] = try envelope.serializedBytes()
        var out = frames
        out[0] = withUnsafeBytes(of: CRC32C.checksum(bytes).littleEndian) { Array($0) } + bytes
        return out
    }

    @Test func magicVersionAndTypeAreChecked() throws {
        let frames = try WireTests.sampleMessage().frames()
        #expect(throws: WireError.badMagic(0x1234)) { try WireMessage.decode(try WireTests.withEnvelope(frames) { $0.magic = 0x1234 }) }
        #expect(throws: WireError.versionMismatch(9)) { try WireMessage.decode(try WireTests.withEnvelope(frames) { $0.protocolVersion = 9 }) }
        #expect(throws: WireError.unknownType(77)) {
            try WireMessage.decode(try WireTests.withEnvelope(frames) { $0.type = .UNRECOGNIZED(77) })
        }
        #expect(throws: WireError.self) {
            try WireMessage.decode(try WireTests.withEnvelope(frames) { $0.tensors[0].shape = [5] })
        }
    }

    /// The committed generated code matches Protos/ (scripts/generate-protos records this digest).
    @Test func generatedCodeMatchesTheProtos() throws {
        let protos = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../Protos").standardized
        let names = try FileManager.default.contentsOfDirectory(atPath: protos.path + "/rlhf/v1").filter { $0.hasSuffix(".proto") }.sorted()
        var crc = CRC32C()
        for name in names {
            let path = "rlhf/v1/" + name
            crc.update(Array(path.utf8))
            crc.update(Array(try Data(contentsOf: protos.appendingPathComponent(path))))
        }
        #expect(crc.value == ProtoDigest.crc32c, "Protos/ changed: run scripts/generate-protos and commit the result")
    }
}
