import ArgumentParser
import Foundation
import LlamaCore

/// `rlhf tokenizer`: make tokenizers.
struct TokenizerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tokenizer",
        abstract: "Train tokenizers.",
        subcommands: [Train.self]
    )

    /// `rlhf tokenizer train`: a SentencePiece-style BPE vocabulary written as llama2.c's tokenizer.bin.
    struct Train: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Train a BPE tokenizer (SentencePiece-style, byte fallback) and write llama2.c's tokenizer.bin.",
            discussion: """
                The corpus is UTF-8 text, one sentence per line. The vocabulary is laid out as LLaMA2's: <unk>, \
                <s>, </s>, the 256 byte pieces <0x00>...<0xFF>, the merged pieces by rank, then the characters \
                that cover --character-coverage of the corpus (rarer ones are spelled in bytes). Words are cut \
                at spaces and keep their leading space; merges never cross words. The same corpus and options \
                always give the same file.
                """)

        @Option(help: "UTF-8 text file, one sentence or paragraph per line.")
        var corpus: String
        @Option(name: .customLong("vocab-size"), help: "Pieces in the vocabulary, including the 259 reserved ones (<unk>, <s>, </s>, 256 bytes).")
        var vocabSize: Int
        @Option(help: "Output path (llama2.c tokenizer.bin format).")
        var out: String
        @Option(name: .customLong("max-piece-length"), help: "Longest merged piece, in characters.")
        var maxPieceLength: Int = 16
        @Option(name: .customLong("character-coverage"), help: "Fraction of the corpus's characters that get a piece; rarer ones fall back to bytes.")
        var characterCoverage: Double = 0.9995

        func validate() throws {
            try OptionCheck.integer(vocabSize, "--vocab-size", 259 ... 1 << 22)
            try OptionCheck.integer(maxPieceLength, "--max-piece-length", 1 ... 1_024)
            try OptionCheck.number(characterCoverage, "--character-coverage", 0 ... 1, openBelow: true)
        }

        func run() throws {
            do { try OutputCheck.writable(out, option: "--out") } catch { throw cliFailure(error) }
            let clock = ContinuousClock()
            let start = clock.now
            do {
                let trainer = try BPETrainer(settings: .init(vocabSize: vocabSize, characterCoverage: characterCoverage,
                                                             maxPieceLength: maxPieceLength))
                let bytes: [UInt8]
                do {
                    let file = try ReadableFile(path: corpus)
                    defer { file.close() }
                    bytes = try file.readAll()
                } catch let LlamaError.io(path, reason) {
                    throw LlamaError.io(path: "corpus \(path)", reason: reason)
                }
                let text = String(decoding: bytes, as: UTF8.self)
                let trainStart = clock.now
                let result = try trainer.training(corpus: text)
                let trainTime = clock.now - trainStart
                try result.tokenizer.write(llama2cPath: out)
                let total = clock.now - start
                let vocab = result.tokenizer.vocabSize
                print("wrote \(out): \(vocab) pieces (\(BPETrainer.reservedPieceCount) reserved, \(result.characterCount) characters, \(result.mergeCount) merges)")
                if result.ranOutOfPairs {
                    print("note: the corpus ran out of pairs to merge; the vocabulary has \(vocab) of the \(vocabSize) pieces asked for")
                }
                let extraSpaces = result.words.first { $0.text == " " }?.count ?? 0
                print("corpus: \(result.corpusBytes) bytes, \(result.lineCount) lines, \(result.wordCount) words (\(result.words.count - (extraSpaces > 0 ? 1 : 0)) distinct), \(extraSpaces) extra spaces (a token each), \(result.fallbackCharacterCount) rare characters left to byte fallback")
                let bytesPerToken = result.tokenCount == 0 ? 0 : Double(result.corpusBytes) / Double(result.tokenCount)
                print("compression: \(result.tokenCount) tokens, \(format(result.tokensPerWord)) tokens per word, \(format(bytesPerToken)) bytes per token")
                print("time: \(format(seconds(total))) s (training \(format(seconds(trainTime))) s)")
            } catch {
                throw cliFailure(error)
            }
        }

        private func seconds(_ d: Duration) -> Double {
            Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
        }

        private func format(_ x: Double) -> String { String(format: "%.3f", x) }
    }
}
