import Foundation
import Testing
import TestKit
@testable import LlamaCore

@Suite struct TokenizerTests {
    @Test(arguments: [Fixtures.llama2Bin, Fixtures.llama2Model])
    func reproducesEverySentencePieceCase(path: String) throws {
        let tokenizer = try Tokenizer(path: path)
        #expect(tokenizer.vocabSize == 32000)
        let cases = try Fixtures.encodeCases()
        #expect(cases.count == 224)
        var failures: [String] = []
        for (text, ids) in cases where tokenizer.encode(text) != ids {
            failures.append(text)
        }
        #expect(failures.isEmpty, "\(failures.count) cases differ, first: \(failures.first ?? "")")
    }

    @Test func decodeInvertsEncodeOnTheCases() throws {
        let tokenizer = try Tokenizer(path: Fixtures.llama2Model)
        for (text, ids) in try Fixtures.encodeCases() {
            #expect(tokenizer.decode(ids) == text, "decode of \(ids.prefix(8))")
        }
    }

    @Test func bosAndEosAndEmptyText() throws {
        let tokenizer = try Tokenizer(path: Fixtures.llama2Bin)
        #expect(tokenizer.encode("") == [])
        #expect(tokenizer.encode("", bos: true, eos: true) == [1, 2])
        let ids = tokenizer.encode("Hello world", bos: true, eos: true)
        #expect(ids.first == 1 && ids.last == 2)
        #expect(tokenizer.decode(ids) == "Hello world")
    }

    @Test func byteFallbackForUnknownCharacters() throws {
        let tokenizer = try Tokenizer(path: Fixtures.kjvBin)
        // The 512-piece vocabulary has no piece for these; each UTF-8 byte becomes <0xXX> (id = byte + 3).
        let ids = tokenizer.encode("€")
        let expectedBytes = Array("€".utf8).map { Int32($0) + 3 }
        #expect(ids.suffix(expectedBytes.count) == expectedBytes[...])
        #expect(tokenizer.decode(ids) == "€")
    }

    @Test func bothFileFormatsAgreeOnTheSmallVocabulary() throws {
        let fromBin = try Tokenizer(path: Fixtures.kjvBin)
        let fromModel = try Tokenizer(path: Fixtures.kjvModel)
        #expect(fromBin.vocabSize == 512 && fromModel.vocabSize == 512)
        let text = "In the beginning God created the heaven and the earth. And the earth was without form, and void; 1234 ünïcödé"
        #expect(fromBin.encode(text) == fromModel.encode(text))
        #expect(fromBin.decode(fromBin.encode(text)) == fromModel.decode(fromModel.encode(text)))
    }

    @Test func streamingDecoderMatchesWholeDecode() throws {
        let tokenizer = try Tokenizer(path: Fixtures.kjvBin)
        let text = "And God said, Let there be light: and there was light. 🙂 naïve — end"
        let ids = tokenizer.encode(text)
        var decoder = StreamingDecoder(tokenizer: tokenizer)
        var streamed = ""
        for id in ids { streamed += decoder.append(id) }
        streamed += decoder.finish()
        #expect(streamed == tokenizer.decode(ids))
        #expect(streamed == text)
    }

    @Test func longTextEncodesLikeItsParts() throws {
        // The merge queue is O(n log n); this checks it stays exact on a long input: merges never
        // cross a newline piece here, so encoding lines separately must give the same ids.
        let tokenizer = try Tokenizer(path: Fixtures.llama2Bin)
        let line = "The quick brown fox jumps over the lazy dog; pack my box with five dozen liquor jugs."
        let long = Array(repeating: line, count: 400).joined(separator: "\n")
        let ids = tokenizer.encode(long)
        #expect(tokenizer.decode(ids) == long)
        let newline = tokenizer.encode("\n").last!
        #expect(ids.filter { $0 == newline }.count == 399)
    }

    @Test func truncatedTokenizerIsRefused() throws {
        let bytes = try Data(contentsOf: URL(fileURLWithPath: Fixtures.kjvBin))
        let dir = try Fixtures.temporaryDirectory()
        let path = dir + "/cut.bin"
        try bytes.prefix(bytes.count - 3).write(to: URL(fileURLWithPath: path))
        #expect(throws: LlamaError.self) { try Tokenizer(path: path) }
        do {
            _ = try Tokenizer(path: path)
        } catch let error as LlamaError {
            #expect(error.description.contains("cut.bin"))
        }
    }

    @Test func tokenizerShorterThanTheVocabIsRefused() throws {
        let tokenizer = try Tokenizer(path: Fixtures.kjvBin)
        let (weights, _) = try Checkpoint.read(path: Fixtures.model("tiny-mha"))
        try tokenizer.check(against: weights.config)
        var bigger = weights.config
        bigger.vocabSize = 1024
        #expect(throws: LlamaError.self) { try tokenizer.check(against: bigger) }
        do {
            try tokenizer.check(against: bigger)
        } catch let error as LlamaError {
            #expect(error.description.contains("512") && error.description.contains("1024"))
        }
    }

    /// A SentencePiece ModelProto written by hand: pieces (text, score, type), then trainer_spec fields.
    static func modelProto(pieces: [(String, UInt64)], trainer: [(field: UInt64, value: UInt64)]) -> [UInt8] {
        func varint(_ v: UInt64) -> [UInt8] {
            var v = v, out: [UInt8] = []
            while v >= 0x80 { out.append(UInt8(v & 0x7F) | 0x80); v >>= 7 }
            return out + [UInt8(v)]
        }
        func field(_ number: UInt64, _ bytes: [UInt8]) -> [UInt8] { varint(number << 3 | 2) + varint(UInt64(bytes.count)) + bytes }
        var out: [UInt8] = []
        for (text, type) in pieces {
            out += field(1, field(1, Array(text.utf8)) + [0x15, 0, 0, 0, 0] + varint(3 << 3) + varint(type))
        }
        return out + field(2, trainer.flatMap { varint($0.field << 3) + varint($0.value) })
    }

    @Test func hostileSentencePieceFieldsAreRefusedOrIgnored() throws {
        let dir = try Fixtures.temporaryDirectory()
        let pieces: [(String, UInt64)] = [("<unk>", 2), ("<s>", 3), ("</s>", 3), ("a", 1)]
        // A piece type of 2^64-1 (a varint no enum holds) is read as a normal piece, not a crash.
        let odd = TokenizerTests.modelProto(pieces: pieces + [("b", .max)], trainer: [(3, 2)])
        try Data(odd).write(to: URL(fileURLWithPath: dir + "/odd.model"))
        #expect(try Tokenizer(path: dir + "/odd.model").pieces.count == 5)
        // Special ids outside the vocabulary are named.
        for (field, name) in [(UInt64(40), "unk_id"), (41, "bos_id"), (42, "eos_id")] {
            for value: UInt64 in [4, 5000, .max] {
                let path = dir + "/ids-\(field)-\(value).model"
                try Data(TokenizerTests.modelProto(pieces: pieces, trainer: [(3, 2), (field, value)])).write(to: URL(fileURLWithPath: path))
                do {
                    _ = try Tokenizer(path: path)
                    Issue.record("\(name) \(value) accepted")
                } catch {
                    #expect("\(error)".contains(name) && "\(error)".contains("4 pieces"), "\(error)")
                }
            }
        }
    }

    @Test func notATokenizerIsRefused() throws {
        let dir = try Fixtures.temporaryDirectory()
        let path = dir + "/garbage.model"
        try Data([0x0A, 0xFF, 0xFF, 0x03]).write(to: URL(fileURLWithPath: path))
        #expect(throws: LlamaError.self) { try Tokenizer(path: path) }
        #expect(throws: LlamaError.self) { try Tokenizer(path: dir + "/missing.bin") }
    }
}
