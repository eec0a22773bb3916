import ClusterRuntime
import Foundation
import LlamaCore
import LlamaTraining
import Recipe
import Synchronization
import Transport
import Wire
import Workers

/// `rlhf bench tokenize`: encode throughput on a long mixed text (the BPE merge queue is O(n log n)).
public struct TokenizeBenchmark: Sendable {

    /// Tokenizer: tokenizer.bin, tokenizer.model, tokenizer.json or a model directory.
    public var tokenizer: String
    /// Size of the text in kilobytes.
    public var kilobytes: Int



    public init(tokenizer: String, kilobytes: Int = 100) {
        self.tokenizer = tokenizer
        self.kilobytes = kilobytes
    }

    /// Runs the benchmark, printing its figures and ratios.
    public func run() throws {
        let tok: Tokenizer
        do { tok = try Tokenizer(path: tokenizer) } catch { throw error }
        let pieces = ["The", " quick", " brown", " fox", "  jumps", "\n", " over", " 1234", " lazy", " dog.", " Äpfel",
                      " naïve", " 東京", " 🙂", "\t", "    code()", " {x: 42}", " ½", " --", " ok"]
        var rng = SeededGenerator(seed: 1)
        var text = ""
        while text.utf8.count < kilobytes * 1024 { text += pieces[Int(rng.next() % UInt64(pieces.count))] }
        var best = Double.infinity
        var ids: [Int32] = []
        for _ in 0..<3 {
            let start = Date()
            ids = tok.encode(text)
            best = min(best, Date().timeIntervalSince(start))
        }
        let decodeStart = Date()
        let back = tok.decode(ids)
        let decodeSeconds = Date().timeIntervalSince(decodeStart)
        print(String(format: "encode %d bytes -> %d tokens: %.1f ms (%.1f MB/s); decode %.1f ms; round trip %@",
                     text.utf8.count, ids.count, best * 1e3, Double(text.utf8.count) / best / 1e6,
                     decodeSeconds * 1e3, back == text ? "exact" : "DIFFERS"))
    }
}
