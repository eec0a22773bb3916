import Foundation
import Testing
@testable import LlamaCore
import TestKit

/// The Hugging Face tokenizer against the `tokenizers` library's own outputs: the fixture tokenizers'
/// reference encode cases, and the small generated tokenizers in `Resources/hf-tokenizers` (LLaMA 3 and
/// Qwen2 style byte-level BPE, Metaspace first/always/never, NFKC + Lowercase + Digits, LLaMA 2 legacy,
/// Split behaviours, added tokens with lstrip/rstrip/single_word/normalized, unk with and without fusing)
/// with encode and decode cases made by the Python `tokenizers` library (that folder's generate.py).
@Suite struct HuggingFaceTokenizerTests {
    static let hf = Fixtures.root + "/hf"
    static let generated = Fixtures.root + "/hf-tokenizers"

    static func json(_ path: String) throws -> [String: Any] {
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        return try JSONSerialization.jsonObject(with: data) as! [String: Any]
    }

    static func ids(_ any: Any?) -> [Int32] { (any as! [Int]).map(Int32.init) }

    /// Exact equality (Swift's `==` on strings is canonical equivalence, which would hide NFC/NFD slips).
    static func same(_ a: String, _ b: String) -> Bool { a.unicodeScalars.elementsEqual(b.unicodeScalars) }

    @Test(arguments: ["hf-llama2-mha", "hf-bytebpe-gqa"])
    func fixtureReferenceEncodeCases(name: String) throws {
        let tokenizer = try HuggingFaceTokenizer(contentsOf: Self.hf + "/\(name)/tokenizer.json")
        let reference = try Self.json(Self.hf + "/\(name).reference.json")
        let cases = reference["encode_cases"] as! [[String: Any]]
        #expect(cases.count > 10)
        var failures = 0
        for c in cases {
            let text = c["text"] as! String
            let expected = Self.ids(c["ids"])
            let got = tokenizer.encode(text)
            if got != expected {
                failures += 1
                if failures <= 5 { Issue.record("\(name): encode(\(text.debugDescription)) = \(got), expected \(expected)") }
            }
        }
        #expect(failures == 0)
    }

    static var caseFiles: [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: generated)) ?? []
        return names.filter { $0.hasSuffix(".cases.json") }.sorted()
    }

    @Test func generatedCaseFilesArePresent() {
        #expect(Self.caseFiles.count >= 10)
    }

    /// A case file: `{"tokenizer": file, "prefix_ids", "suffix_ids", "vocab_size", "special_ids",
    /// "strips_leading_space", "encode": [[text, ids]], "decode": [[encode index or ids, skip_special_tokens, text]]}`.
    @Test(arguments: caseFiles)
    func generatedCases(file: String) throws {
        let cases = try Self.json(Self.generated + "/" + file)
        let tokenizer = try HuggingFaceTokenizer(contentsOf: Self.generated + "/" + (cases["tokenizer"] as! String))
        #expect(tokenizer.prefixIds == Self.ids(cases["prefix_ids"]), "\(file) prefix")
        #expect(tokenizer.suffixIds == Self.ids(cases["suffix_ids"]), "\(file) suffix")
        #expect(tokenizer.vocabSize == cases["vocab_size"] as! Int, "\(file) vocab size")
        #expect(tokenizer.specialIds == Set(Self.ids(cases["special_ids"])), "\(file) special ids")
        #expect(tokenizer.stripsLeadingSpace == cases["strips_leading_space"] as! Bool, "\(file) stripsLeadingSpace")
        let encodeCases = (cases["encode"] as! [[Any]]).map { ($0[0] as! String, Self.ids($0[1])) }
        #expect(encodeCases.count >= 100)
        var failures = 0
        for (text, expected) in encodeCases {
            let got = tokenizer.encode(text)
            if got != expected {
                failures += 1
                if failures <= 5 { Issue.record("\(file): encode(\(text.debugDescription)) = \(got), expected \(expected)") }
            }
        }
        for c in cases["decode"] as! [[Any]] {
            let ids = (c[0] as? Int).map { encodeCases[$0].1 } ?? Self.ids(c[0])
            let skip = c[1] as! Bool
            let expected = c[2] as! String
            let got = tokenizer.decode(ids, skipSpecialTokens: skip)
            if !Self.same(got, expected) {
                failures += 1
                if failures <= 10 {
                    Issue.record("\(file): decode(\(ids), skip: \(skip)) = \(got.debugDescription), expected \(expected.debugDescription)")
                }
            }
        }
        #expect(failures == 0)
    }

    static let tokenizerFiles: [String] = [hf + "/hf-llama2-mha/tokenizer.json", hf + "/hf-bytebpe-gqa/tokenizer.json"]
        + ((try? FileManager.default.contentsOfDirectory(atPath: generated)) ?? [])
            .filter { $0.hasSuffix(".tokenizer.json") }.sorted().map { generated + "/" + $0 }

    /// `bytes(of:)` per token, concatenated (less the leading space when `stripsLeadingSpace`), gives the decoded text.
    @Test(arguments: tokenizerFiles)
    func streamingBytesMatchDecode(path: String) throws {
        let tokenizer = try HuggingFaceTokenizer(contentsOf: path)
        for text in ["Hello world, this is a test.", "Zürich 日本 😀 costs $12.50\nnext line", "a  b\tc"] {
            let ids = tokenizer.encode(text).filter { !tokenizer.specialIds.contains($0) }
            var bytes: [UInt8] = []
            for id in ids { bytes += tokenizer.bytes(of: id) }
            if tokenizer.stripsLeadingSpace, bytes.first == 0x20 { bytes.removeFirst() }
            let decoded = tokenizer.decode(ids)
            #expect(Self.same(String(decoding: bytes, as: UTF8.self), decoded), "\(path): \(text.debugDescription)")
        }
        for id in tokenizer.specialIds { #expect(tokenizer.bytes(of: id).isEmpty) }
    }

    @Test func llama2FixtureShape() throws {
        let t = try HuggingFaceTokenizer(contentsOf: Self.hf + "/hf-llama2-mha/tokenizer.json")
        #expect(t.vocabSize == 32000)
        #expect(t.specialIds == [0, 1, 2])
        #expect(t.token(1) == "<s>")
        #expect(t.id(of: "<s>") == 1)
        #expect(t.id(of: "▁the") != nil)
        #expect(t.stripsLeadingSpace)
        // A byte-fallback token stands for its byte in a stream.
        #expect(t.bytes(of: t.id(of: "<0x0A>")!) == [0x0A])
        #expect(t.bytes(of: t.id(of: "▁the")!) == Array(" the".utf8))
        #expect(t.decode(t.encode(" Hello  world\n日本")) == " Hello  world\n日本")
        #expect(t.decode([1, 15043], skipSpecialTokens: false) == "<s> Hello")
        #expect(t.decode([1, 15043]) == "Hello")
    }

    @Test func byteLevelFixtureShape() throws {
        let t = try HuggingFaceTokenizer(contentsOf: Self.hf + "/hf-bytebpe-gqa/tokenizer.json")
        #expect(!t.stripsLeadingSpace)
        #expect(t.specialIds == [0, 1, 2])
        #expect(t.encode("<|im_start|>user\nhi<|im_end|>").first == 1)
        #expect(t.bytes(of: t.id(of: "Ġ")!) == [0x20])
        let text = "  Mixed: café, 日本語, emoji 😀 and\r\nCRLF\t tabs "
        #expect(Self.same(t.decode(t.encode(text)), text))
    }

    @Test func llama3StyleTemplate() throws {
        let t = try HuggingFaceTokenizer(contentsOf: Self.generated + "/llama3.tokenizer.json")
        let bos = try #require(t.id(of: "<|begin_of_text|>"))
        #expect(t.prefixIds == [bos])
        #expect(t.suffixIds == [])
        #expect(t.encode("<|begin_of_text|>Hi").first == bos)
    }

    static func modified(_ path: String, _ edit: (inout [String: Any]) -> Void) throws -> Data {
        var object = try json(path)
        edit(&object)
        return try JSONSerialization.data(withJSONObject: object)
    }

    /// Without a tokenizer_config.json naming it, BOS is the token the post-processor puts first, before
    /// any token that merely has a usual BOS name (here `<|endoftext|>`, which GPT-2-style vocabularies
    /// also hold).
    @Test func bosIsThePostProcessorsBeforeAUsualName() throws {
        var root = try Self.json(Self.generated + "/llama2-legacy.tokenizer.json")
        var added = root["added_tokens"] as! [[String: Any]]
        added[1]["content"] = "<|bos|>"
        added.append(["id": 456, "content": "<|endoftext|>", "single_word": false, "lstrip": false, "rstrip": false,
                      "normalized": false, "special": true])
        root["added_tokens"] = added
        var model = root["model"] as! [String: Any]
        var vocab = model["vocab"] as! [String: Any]
        vocab["<|bos|>"] = vocab.removeValue(forKey: "<s>")
        model["vocab"] = vocab
        root["model"] = model
        root["post_processor"] = ["type": "TemplateProcessing",
                                  "single": [["SpecialToken": ["id": "<|bos|>", "type_id": 0]], ["Sequence": ["id": "A", "type_id": 0]]],
                                  "pair": [["Sequence": ["id": "A", "type_id": 0]], ["Sequence": ["id": "B", "type_id": 1]]],
                                  "special_tokens": ["<|bos|>": ["id": "<|bos|>", "ids": [1], "tokens": ["<|bos|>"]]]]
        let dir = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try JSONSerialization.data(withJSONObject: root).write(to: URL(fileURLWithPath: dir + "/tokenizer.json"))
        let tokenizer = try Tokenizer(path: dir + "/tokenizer.json")
        #expect(tokenizer.bosId == 1 && tokenizer.tokenText(tokenizer.bosId) == "<|bos|>" && tokenizer.eosId == 2)
    }

    @Test func unsupportedComponentsAreRefusedByName() throws {
        let base = Self.generated + "/llama3.tokenizer.json"
        let edits: [(String, (inout [String: Any]) -> Void)] = [
            ("pre_tokenizer type \"BertPreTokenizer\"", { $0["pre_tokenizer"] = ["type": "BertPreTokenizer"] }),
            ("normalizer type \"Precompiled\"", { $0["normalizer"] = ["type": "Precompiled", "precompiled_charsmap": ""] }),
            ("decoder type \"WordPiece\"", { $0["decoder"] = ["type": "WordPiece", "prefix": "##", "cleanup": true] }),
            ("post_processor type \"Foo\"", { $0["post_processor"] = ["type": "Foo"] }),
            ("model type \"WordPiece\"", { var m = $0["model"] as! [String: Any]; m["type"] = "WordPiece"; $0["model"] = m }),
            ("model dropout 0.1", { var m = $0["model"] as! [String: Any]; m["dropout"] = 0.1; $0["model"] = m }),
            ("pre_tokenizer Split behavior \"Sideways\"", {
                $0["pre_tokenizer"] = ["type": "Split", "pattern": ["String": " "], "behavior": "Sideways", "invert": false]
            }),
        ]
        for (expected, edit) in edits {
            let data = try Self.modified(base, edit)
            do {
                _ = try HuggingFaceTokenizer(json: data, path: "x/tokenizer.json")
                Issue.record("accepted: \(expected)")
            } catch let LlamaError.invalidTokenizer(path, reason) {
                #expect(path == "x/tokenizer.json")
                #expect(reason.contains(expected), "\(reason)")
            }
        }
        #expect(throws: LlamaError.self) { try HuggingFaceTokenizer(json: Data("{".utf8), path: "bad.json") }
        #expect(throws: LlamaError.self) { try HuggingFaceTokenizer(contentsOf: "/nonexistent/tokenizer.json") }
    }

    /// 1 MB of mixed text per tokenizer shape encodes (and, where lossless, decodes back).
    @Test(arguments: [hf + "/hf-llama2-mha/tokenizer.json", hf + "/hf-bytebpe-gqa/tokenizer.json",
                      generated + "/llama3.tokenizer.json", generated + "/metaspace-first.tokenizer.json",
                      generated + "/nfkc-digits.tokenizer.json"])
    func encodesOneMegabyte(path: String) throws {
        let tokenizer = try HuggingFaceTokenizer(contentsOf: path)
        let paragraph = "The quick brown fox DON'T jump; we'll see 1234567 naïve cafés — 日本語のテキスト 😀👍🏽 "
            + "مرحبا\r\n\tindented   spaces  x² ½ ①\n"
        var text = ""
        while text.utf8.count < 1_000_000 { text += paragraph }
        // Speed is `rlhf bench tokenize`'s business (docs/benchmarks.md); this checks a long text
        // encodes and decodes back.
        let ids = tokenizer.encode(text)
        #expect(ids.count > 100_000)
        if !path.contains("nfkc") && !path.contains("metaspace") {
            #expect(Self.same(tokenizer.decode(ids), text))
        }
    }
}
