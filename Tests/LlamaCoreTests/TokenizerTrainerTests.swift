import Foundation
import Testing
import TestKit
@testable import LlamaCore

@Suite struct TokenizerTrainerTests {
    /// Sentences drawn from a few templates by a fixed generator (about 30 KB).
    static let corpus: String = {
        let subjects = ["the king", "a shepherd", "the people of the city", "my brother", "the old woman", "every child",
                        "the priests and the elders", "a stranger", "the captain of the host", "our fathers"]
        let verbs = ["went up to", "spoke with", "looked upon", "gave bread to", "walked beside", "remembered",
                     "sent word to", "sat down by", "turned away from", "built an altar near"]
        let objects = ["the temple", "the river", "the house of the Lord", "a great multitude", "the mountain",
                       "their fathers", "the gate of the city", "the wilderness", "the sea", "the land of Egypt"]
        let tails = [".", ", and it was good.", " in the morning.", "; and they were afraid.", " 42 times!", "?",
                     " for 7 days and 40 nights.", ", saying: \"Peace be with you.\""]
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        func next(_ n: Int) -> Int {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Int((state >> 33) % UInt64(n))
        }
        var lines: [String] = []
        for _ in 0..<500 {
            let subject = subjects[next(subjects.count)]
            let line = subject.prefix(1).uppercased() + subject.dropFirst() + " " + verbs[next(verbs.count)] + " "
                + objects[next(objects.count)] + tails[next(tails.count)]
            lines.append(next(10) == 0 ? line.replacingOccurrences(of: " the ", with: "  the ") : line)
        }
        return lines.joined(separator: "\n") + "\n"
    }()

    static let lines: [String] = corpus.split(separator: "\n").map(String.init)
    static let unseen = ["Zebras quickly jumped over the lazy fox", "naïve café résumé", "emoji 🙂 and 漢字 and ÅØ",
                         "  leading and trailing  ", "tab\tseparated\tvalues", "x", "The KING spoke!!! 12345"]
    static let training: BPETrainer.Training = try! BPETrainer(settings: .init(vocabSize: 500)).training(corpus: corpus)

    /// The message of the error `body` throws, or nil.
    func message(_ body: () throws -> Void) -> String? {
        do { try body() } catch { return "\(error)" }
        return nil
    }

    @Test func roundTripsTheCorpusAndUnseenText() throws {
        let tokenizer = Self.training.tokenizer
        for text in Self.lines + Self.unseen {
            #expect(tokenizer.decode(tokenizer.encode(text)) == text, "\(text)")
        }
        // Never-seen characters are spelled in byte pieces (ids 3...258 are <0x00>...<0xFF>).
        let smile = tokenizer.encode("🙂")
        #expect(Array(smile.suffix(4)) == Array("🙂".utf8).map { Int32($0) + 3 })
        let accent = tokenizer.encode("é")
        #expect(Array(accent.suffix(2)) == Array("é".utf8).map { Int32($0) + 3 })
    }

    @Test func vocabularyHasTheRequestedSizeAndLLaMA2Layout() throws {
        let t = Self.training
        let tokenizer = t.tokenizer
        #expect(tokenizer.vocabSize == 500)
        #expect(!t.ranOutOfPairs)
        #expect(t.mergeCount + t.characterCount + 259 == 500)
        #expect(tokenizer.pieces[0] == Array("<unk>".utf8) && tokenizer.kinds[0] == .unknown)
        #expect(tokenizer.pieces[1] == Array("<s>".utf8) && tokenizer.kinds[1] == .control && tokenizer.bosId == 1)
        #expect(tokenizer.pieces[2] == Array("</s>".utf8) && tokenizer.kinds[2] == .control && tokenizer.eosId == 2)
        #expect(tokenizer.pieces[3] == Array("<0x00>".utf8) && tokenizer.pieces[3 + 0x0A] == Array("<0x0A>".utf8))
        #expect(tokenizer.pieces[258] == Array("<0xFF>".utf8))
        #expect(tokenizer.kinds[3...258].allSatisfy { $0 == .byte })
        #expect(tokenizer.kinds[259...].allSatisfy { $0 == .normal })
        // Merges first, by rank (score -rank), then the characters with lower scores.
        let normal = Array(tokenizer.scores[259...])
        #expect(zip(normal, normal.dropFirst()).allSatisfy { $0 > $1 })
        #expect(tokenizer.scores[259] == 0 && tokenizer.scores[260] == -1)
        let characters = tokenizer.pieces[(259 + t.mergeCount)...]
        #expect(characters.allSatisfy { String(decoding: $0, as: UTF8.self).unicodeScalars.count == 1 })
        #expect(tokenizer.pieces[259 ..< 259 + t.mergeCount].allSatisfy {
            String(decoding: $0, as: UTF8.self).unicodeScalars.count >= 2 })
        #expect(characters.contains([UInt8(ascii: " ")]))
        #expect(Set(tokenizer.pieces).count == tokenizer.vocabSize)
    }

    @Test func aTinyCorpusRunsOutOfPairs() throws {
        let t = try BPETrainer(settings: .init(vocabSize: 1000)).training(corpus: "ab ab\nab\n")
        #expect(t.ranOutOfPairs)
        #expect(t.characterCount == 3 && t.mergeCount == 2)
        #expect(t.tokenizer.vocabSize == 264)
        // Equal counts: the pair of the earlier pieces wins (" " before "a" before "b").
        #expect(t.tokenizer.pieces[259] == Array(" a".utf8))
        #expect(t.tokenizer.pieces[260] == Array(" ab".utf8))
        #expect(t.tokenizer.encode("ab ab") == [260, 260])
        #expect(t.tokensPerWord == 1)
    }

    @Test func frequentWordsBecomeSinglePieces() throws {
        let tokenizer = Self.training.tokenizer
        for word in ["the", "and", "of", "city", "The", "king"] {
            #expect(tokenizer.encode(word).count == 1, "\(word): \(tokenizer.encode(word))")
        }
        #expect(Self.training.tokensPerWord < 1.5, "\(Self.training.tokensPerWord) merges \(Self.training.mergeCount) chars \(Self.training.characterCount) distinct \(Self.training.words.count)")
        let perLine = Self.lines.reduce(0) { $0 + tokenizer.encode($1).count }
        #expect(perLine == Self.training.tokenCount)
    }

    @Test func trainingIsDeterministic() throws {
        let again = try BPETrainer(settings: .init(vocabSize: 500)).training(corpus: Self.corpus)
        #expect(again.tokenizer.pieces == Self.training.tokenizer.pieces)
        #expect(again.tokenizer.scores == Self.training.tokenizer.scores)
        #expect(again.tokenizer.kinds == Self.training.tokenizer.kinds)
        #expect(again.words == Self.training.words)
    }

    @Test func writesTokenizerBinAndReadsItBack() throws {
        let tokenizer = Self.training.tokenizer
        let path = try Fixtures.temporaryDirectory() + "/tokenizer.bin"
        try tokenizer.write(llama2cPath: path)
        let read = try Tokenizer(path: path)
        #expect(read.pieces == tokenizer.pieces)
        #expect(read.scores == tokenizer.scores)
        #expect(read.kinds == tokenizer.kinds)
        #expect(read.bosId == 1 && read.eosId == 2 && read.unknownId == 0)
        for text in Self.lines + Self.unseen {
            #expect(read.encode(text, bos: true) == tokenizer.encode(text, bos: true), "\(text)")
        }
        #expect(read.llama2cBytes() == tokenizer.llama2cBytes())
        // The header's max_token_length is the longest piece in bytes.
        let bytes = tokenizer.llama2cBytes()
        let maxLength = Int(bytes[0]) | Int(bytes[1]) << 8 | Int(bytes[2]) << 16 | Int(bytes[3]) << 24
        #expect(maxLength == tokenizer.pieces.map(\.count).max())
    }

    @Test func theEncoderReproducesTheTrainersSegmentation() throws {
        let tokenizer = Self.training.tokenizer
        for word in Self.training.words where word.text != " " {
            #expect(tokenizer.encode(String(word.text.dropFirst())) == word.ids, "\(word.text)")
        }
        // Words over a tiny alphabet make pieces that split several ways ("aab" = "a"+"ab" = "aa"+"b");
        // the encoder merges any split, the trainer must agree.
        var state: UInt64 = 12345
        var lines: [String] = []
        for _ in 0..<300 {
            var words: [String] = []
            for _ in 0..<6 {
                state = state &* 6364136223846793005 &+ 1442695040888963407
                let length = 1 + Int((state >> 40) % 9)
                var word = ""
                for i in 0..<length { word.append(["a", "b", "a", "c"][Int((state >> UInt64(2 * i)) & 3)]) }
                words.append(word)
            }
            lines.append(words.joined(separator: " "))
        }
        let small = try BPETrainer(settings: .init(vocabSize: 330, maxPieceLength: 6)).training(corpus: lines.joined(separator: "\n"))
        for word in small.words where word.text != " " {
            #expect(small.tokenizer.encode(String(word.text.dropFirst())) == word.ids, "\(word.text)")
        }
        #expect(small.tokenizer.pieces[259...].allSatisfy { String(decoding: $0, as: UTF8.self).count <= 6 })
        #expect(lines.reduce(0) { $0 + small.tokenizer.encode($1).count } == small.tokenCount)
    }

    @Test func rareCharactersFallBackToBytes() throws {
        let corpus = String(repeating: "abc bca cab\n", count: 200) + "café\n"
        let covered = try BPETrainer(settings: .init(vocabSize: 300, characterCoverage: 0.999)).training(corpus: corpus)
        #expect(covered.fallbackCharacterCount == 2)  // "f" and "é" are rarer than 0.1 %
        #expect(!covered.tokenizer.pieces.contains(Array("é".utf8)))
        let ids = covered.tokenizer.encode("café")
        #expect(Array(ids.suffix(2)) == Array("é".utf8).map { Int32($0) + 3 })
        #expect(covered.tokenizer.decode(ids) == "café")
        let cafe = try #require(covered.words.first { $0.text == " café" })
        #expect(cafe.ids == ids)
        let all = try BPETrainer(settings: .init(vocabSize: 300, characterCoverage: 1)).training(corpus: corpus)
        #expect(all.fallbackCharacterCount == 0)
        #expect(all.tokenizer.pieces.contains(Array("é".utf8)))
    }

    @Test func badSettingsAreRefusedWithAMessage() throws {
        let small = message { _ = try BPETrainer(settings: .init(vocabSize: 100)) }
        #expect(small?.contains("vocab_size") == true && small?.contains("259") == true, "\(small ?? "nil")")
        let coverage = message { _ = try BPETrainer(settings: .init(vocabSize: 300, characterCoverage: 1.5)) }
        #expect(coverage?.contains("character_coverage") == true)
        #expect(message { _ = try BPETrainer(settings: .init(vocabSize: 300, characterCoverage: 0)) } != nil)
        let length = message { _ = try BPETrainer(settings: .init(vocabSize: 300, maxPieceLength: 0)) }
        #expect(length?.contains("max_piece_length") == true)
        let trainer = try BPETrainer(settings: .init(vocabSize: 262))
        for empty in ["", "\n\n", "\r\n"] {
            let m = message { _ = try trainer.train(corpus: empty) }
            #expect(m?.contains("empty") == true, "\(m ?? "nil")")
        }
        // Ten characters (space included) need 269 pieces.
        let tooFew = message { _ = try trainer.train(corpus: "abcd efghi\n") }
        #expect(tooFew?.contains("vocab_size") == true && tooFew?.contains("269") == true
                && tooFew?.contains("characters") == true, "\(tooFew ?? "nil")")
        #expect(message { _ = try BPETrainer(settings: .init(vocabSize: 269)).train(lines: ["abcd efghi"]) } == nil)
    }
}
