import Foundation
import LlamaCore

/// Paths of the fixture copies in this target's resources.
enum Fixtures {
    static let root: String = Bundle.module.url(forResource: "Resources", withExtension: nil)!.path
    static var models: String { root + "/models" }
    static func model(_ name: String) -> String { models + "/\(name).bin" }
    static var llama2Bin: String { root + "/tokenizer/llama2/tokenizer.bin" }
    static var llama2Model: String { root + "/tokenizer/llama2/tokenizer.model" }
    static var kjvBin: String { root + "/tokenizer/kjv512/tokenizer.bin" }
    static var kjvModel: String { root + "/tokenizer/kjv512/tokenizer.model" }

    /// The SentencePiece encode cases: `(text, ids)`.
    static func encodeCases() throws -> [(String, [Int32])] {
        let text = try String(contentsOfFile: root + "/tokenizer/llama2/encode-cases.jsonl", encoding: .utf8)
        return try text.split(separator: "\n").map { line in
            let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: Any]
            return (object["text"] as! String, (object["ids"] as! [Int]).map(Int32.init))
        }
    }

    /// A fresh temporary directory.
    static func temporaryDirectory() throws -> String {
        let path = NSTemporaryDirectory() + "llamacore-tests-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }
}
