import Foundation

/// Complete Hugging Face model directories from the core's weights and tokenizer: what
/// `rlhf checkpoint convert --to hf` and a run's `export: hf` write, and what `transformers`
/// (`AutoModelForCausalLM`, `AutoTokenizer`, `apply_chat_template`) loads.
public enum HuggingFaceExport {
    /// Files of a model directory's tokenizer, copied as they are when the source has them.
    static let tokenizerFiles = ["tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
                                 "added_tokens.json", "chat_template.jinja"]

    /// Writes `weights` with the tokenizer at `tokenizerPath` into `directory`: config.json,
    /// generation_config.json (`eos_token_id`: EOS, then the end of turn and the source's other stop
    /// tokens, `Tokenizer.stopIds`), model.safetensors in `dtype`, and the tokenizer's files (copied from a
    /// model directory or beside a tokenizer.json; made from a tokenizer.bin or tokenizer.model as
    /// LLaMA2's Hugging Face repositories ship theirs), with the chat template of `chatFormat`
    /// (default: the tokenizer's own). With `scoreHead`, a reward model (`HuggingFaceCheckpoint.write`).
    public static func write(weights: ModelWeights, tokenizerPath: String, chatFormat: ChatFormat? = nil,
                             dtype: SafetensorsFile.DType, to directory: String, scoreHead: [Float]? = nil) throws {
        var tokenizer = try Tokenizer(path: tokenizerPath)
        try tokenizer.check(against: weights.config, path: tokenizerPath)
        if let chatFormat { tokenizer.chatFormat = chatFormat }
        // `generate` (transformers, vLLM) stops where this core's sampling stops: EOS (the first id, what
        // `config.eos_token_id` reads as one id), then the chat format's end of turn and the source's own stops.
        let eos = Int(tokenizer.eosId)
        var config = HuggingFaceConfig(llama: weights.config, bosTokenId: Int(tokenizer.bosId),
                                       eosTokenIds: [eos] + tokenizer.stopIds.map(Int.init).filter { $0 != eos })
        if scoreHead != nil, HuggingFaceCheckpoint.isModelDirectory(tokenizerPath) {
            // A reward model pools at the last token that is not its pad id: keep the source directory's.
            config.padTokenId = try HuggingFaceConfig(contentsOf: tokenizerPath + "/config.json").padTokenId
        }
        try HuggingFaceCheckpoint.write(weights, config: config, dtype: dtype, to: directory, scoreHead: scoreHead)

        var isDirectory: ObjCBool = false
        _ = FileManager.default.fileExists(atPath: tokenizerPath, isDirectory: &isDirectory)
        let sourceDirectory: String? = isDirectory.boolValue ? tokenizerPath
            : tokenizerPath.hasSuffix(".json") ? (tokenizerPath as NSString).deletingLastPathComponent : nil
        if let sourceDirectory {
            for name in tokenizerFiles {
                let from = name == "tokenizer.json" && !isDirectory.boolValue ? tokenizerPath : sourceDirectory + "/" + name
                guard FileManager.default.fileExists(atPath: from) else { continue }
                try copy(from, to: directory + "/" + name)
            }
            let format = chatFormat ?? tokenizer.chatFormat
            let hasTemplate = try ChatFormat.templateSource(directory: sourceDirectory) != nil
            if chatFormat != nil || !hasTemplate {
                try HuggingFaceCheckpoint.write(Data(format.jinjaSource.utf8), to: directory + "/chat_template.jinja")
            }
        } else {
            try HuggingFaceCheckpoint.write(try tokenizer.huggingFaceJSON(), to: directory + "/tokenizer.json")
            let tokenizerConfig: [String: Any] = [
                "tokenizer_class": "LlamaTokenizerFast",
                "bos_token": tokenizer.tokenText(tokenizer.bosId),
                "eos_token": tokenizer.tokenText(tokenizer.eosId),
                "unk_token": tokenizer.tokenText(tokenizer.unknownId),
                "add_bos_token": true,
                "add_eos_token": false,
                "clean_up_tokenization_spaces": false,
                "legacy": true,
                "model_max_length": weights.config.seqLen,
                "chat_template": (chatFormat ?? tokenizer.chatFormat).jinjaSource,
            ]
            try HuggingFaceCheckpoint.write(try JSONSerialization.data(withJSONObject: tokenizerConfig, options: [.prettyPrinted, .sortedKeys]),
                                            to: directory + "/tokenizer_config.json")
        }
    }

    static func copy(_ from: String, to: String) throws {
        guard let data = FileManager.default.contents(atPath: from) else {
            throw LlamaError.io(path: from, reason: "cannot read")
        }
        try HuggingFaceCheckpoint.write(data, to: to)
    }
}

extension Tokenizer {
    /// This SentencePiece-style vocabulary as a Hugging Face `tokenizer.json` in the shape LLaMA2's
    /// repositories ship (what `transformers`' LlamaConverter writes): normalizer Prepend("▁") (when
    /// the dummy prefix is on) and Replace(" " -> "▁"), a byte-fallback BPE whose merges are ranked
    /// by the merged piece's score, control pieces as special added tokens, BOS added by the
    /// post-processor, and the decoder that undoes it all. A tokenizer read from a tokenizer.json is
    /// refused (export copies that file instead).
    public func huggingFaceJSON() throws -> Data {
        guard huggingFace == nil else {
            throw LlamaError.invalidTokenizer(path: "tokenizer", reason: "already a tokenizer.json; copy the file")
        }
        let space = "\u{2581}"
        func text(_ id: Int) -> String { String(decoding: pieces[id], as: UTF8.self).replacingOccurrences(of: " ", with: space) }
        var vocab: [String: Int] = [:]
        var added: [[String: Any]] = []
        var mergeable: [String: Int] = [:]
        for id in 0..<pieces.count {
            let piece = text(id)
            if vocab[piece] == nil { vocab[piece] = id }
            switch kinds[id] {
            case .control, .unknown:
                added.append(["id": id, "content": piece, "single_word": false, "lstrip": false, "rstrip": false,
                              "normalized": false, "special": true])
            case .normal, .userDefined:
                if mergeable[piece] == nil { mergeable[piece] = id }
            default: break
            }
        }
        // Every split of a mergeable piece into two mergeable pieces, ranked by the piece's score
        // (ties: lower id first), then by the parts' ids: SentencePiece merges by score.
        var merges: [(score: Float, id: Int, left: Int, right: Int, pair: [String])] = []
        for (piece, id) in mergeable {
            let characters = Array(piece.unicodeScalars)
            guard characters.count > 1 else { continue }
            for cut in 1..<characters.count {
                var left = String.UnicodeScalarView(), right = String.UnicodeScalarView()
                left.append(contentsOf: characters[..<cut])
                right.append(contentsOf: characters[cut...])
                let l = String(left), r = String(right)
                if let li = mergeable[l], let ri = mergeable[r] {
                    merges.append((scores[id], id, li, ri, [l, r]))
                }
            }
        }
        merges.sort { a, b in
            a.score != b.score ? a.score > b.score : a.id != b.id ? a.id < b.id : a.left != b.left ? a.left < b.left : a.right < b.right
        }
        var normalizers: [[String: Any]] = []
        if addDummyPrefix { normalizers.append(["type": "Prepend", "prepend": space]) }
        normalizers.append(["type": "Replace", "pattern": ["String": " "], "content": space])
        let bos = text(Int(bosId))
        var decoders: [[String: Any]] = [["type": "Replace", "pattern": ["String": space], "content": " "],
                                         ["type": "ByteFallback"], ["type": "Fuse"]]
        if addDummyPrefix { decoders.append(["type": "Strip", "content": " ", "start": 1, "stop": 0]) }
        let object: [String: Any] = [
            "version": "1.0",
            "truncation": NSNull(),
            "padding": NSNull(),
            "added_tokens": added,
            "normalizer": ["type": "Sequence", "normalizers": normalizers],
            "pre_tokenizer": NSNull(),
            "post_processor": [
                "type": "TemplateProcessing",
                "single": [["SpecialToken": ["id": bos, "type_id": 0]], ["Sequence": ["id": "A", "type_id": 0]]],
                "pair": [["SpecialToken": ["id": bos, "type_id": 0]], ["Sequence": ["id": "A", "type_id": 0]],
                         ["SpecialToken": ["id": bos, "type_id": 1]], ["Sequence": ["id": "B", "type_id": 1]]],
                "special_tokens": [bos: ["id": bos, "ids": [Int(bosId)], "tokens": [bos]]],
            ] as [String: Any],
            "decoder": ["type": "Sequence", "decoders": decoders],
            "model": [
                "type": "BPE", "dropout": NSNull(), "unk_token": text(Int(unknownId)), "continuing_subword_prefix": NSNull(),
                "end_of_word_suffix": NSNull(), "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
                "vocab": vocab, "merges": merges.map(\.pair),
            ] as [String: Any],
        ]
        return try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
    }
}
