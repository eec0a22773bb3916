import Foundation

/// Tokenizers of Hugging Face model directories: `tokenizer.json` (through `HuggingFaceTokenizer`,
/// exactly as the `tokenizers` library encodes and decodes) or, where a directory has only that,
/// SentencePiece's `tokenizer.model`; special tokens from `tokenizer_config.json` (else the ids in
/// `config.json`), and the chat format from the directory's template.
extension Tokenizer {
    /// Wraps a `tokenizer.json` pipeline. The vocabulary's pieces are what each token decodes to in
    /// the middle of a text (special tokens: their text, as control pieces).
    init(huggingFace hf: HuggingFaceTokenizer, bosId: Int32, eosId: Int32, unknownId: Int32) {
        var pieces: [[UInt8]] = [], kinds: [PieceKind] = []
        pieces.reserveCapacity(hf.vocabSize)
        kinds.reserveCapacity(hf.vocabSize)
        for id in 0..<Int32(hf.vocabSize) {
            let text = hf.token(id) ?? ""
            if hf.specialIds.contains(id) {
                pieces.append(Array(text.utf8))
                kinds.append(.control)
            } else if let byte = Tokenizer.byteValue(Array(text.utf8)), hf.bytes(of: id) == [byte] {
                pieces.append(Array(text.utf8))
                kinds.append(.byte)
            } else if hf.token(id) == nil {
                pieces.append([])
                kinds.append(.unused)
            } else {
                pieces.append(hf.bytes(of: id))
                kinds.append(.normal)
            }
        }
        // Scores only matter to llama2.c's own encoder after an export: earlier ids merge first, as
        // in BPE vocabularies ordered by merge rank.
        let scores = (0..<pieces.count).map { -Float($0) }
        self.init(pieces: pieces, scores: scores, kinds: kinds, bosId: bosId, eosId: eosId, unknownId: unknownId,
                  addDummyPrefix: hf.stripsLeadingSpace, removeExtraWhitespaces: false)
        huggingFace = hf
    }

    /// The tokenizer that goes with a checkpoint when none is named: a model directory's own (the
    /// directory itself), else `tokenizer.bin` beside the checkpoint file.
    public static func defaultPath(forCheckpoint checkpoint: String) -> String {
        if HuggingFaceCheckpoint.isModelDirectory(checkpoint) { return checkpoint }
        return ((checkpoint as NSString).deletingLastPathComponent as NSString).appendingPathComponent("tokenizer.bin")
    }

    /// Loads a Hugging Face model directory's tokenizer: `tokenizer.json` (else `tokenizer.model`),
    /// its special tokens and chat format. `chatFormat` overrides the directory's template (a spec's
    /// `chat_template:`); an unrecognised template is kept as `chatTemplateError` for the callers
    /// that render conversations to raise.
    public static func fromHuggingFace(directory: String, chatFormat: ChatFormat? = nil) throws -> Tokenizer {
        let jsonPath = directory + "/tokenizer.json"
        var tokenizer: Tokenizer
        if FileManager.default.fileExists(atPath: jsonPath) {
            tokenizer = try fromHuggingFace(json: jsonPath)
        } else if FileManager.default.fileExists(atPath: directory + "/tokenizer.model") {
            tokenizer = try Tokenizer(path: directory + "/tokenizer.model")
        } else {
            throw LlamaError.invalidTokenizer(path: directory, reason: "no tokenizer.json and no tokenizer.model")
        }
        tokenizer.generationStopIds = try generationStopIds(directory: directory)
        if let chatFormat {
            tokenizer.chatFormat = chatFormat
        } else if let (source, path) = try ChatFormat.templateSource(directory: directory) {
            // One of the core's own formats' templates renders through that format; any other runs as
            // the template it is (the format its markers name is kept for what needs a format's name).
            let trimmed = source.trimmingCharacters(in: .whitespacesAndNewlines)
            if let builtIn = ChatFormat.allCases.first(where: { $0.jinjaSource == trimmed }) {
                tokenizer.chatFormat = builtIn
            } else {
                if let recognised = try? ChatFormat.recognise(template: source, path: path) { tokenizer.chatFormat = recognised }
                do {
                    tokenizer.chatTemplate = try ModelChatTemplate(source: source, path: path)
                } catch let error as LlamaError {
                    tokenizer.chatTemplateError = error
                }
            }
        }
        return tokenizer
    }

    /// `eos_token_id` of the directory's `generation_config.json`, else of its `config.json` (as
    /// `transformers` builds a generation config from the model's): one id or a list; none where
    /// neither file has it. A value that is not an id or a list of ids is refused naming the file.
    static func generationStopIds(directory: String) throws -> [Int32] {
        for name in ["generation_config.json", "config.json"] {
            let path = directory + "/" + name
            guard let data = FileManager.default.contents(atPath: path),
                  let object = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any],
                  let value = object["eos_token_id"], !(value is NSNull) else { continue }
            func id(_ value: Any) -> Int32? {
                // JSON's true and false are numbers to Foundation too; their type is a char.
                guard let number = value as? NSNumber, String(cString: number.objCType) != "c",
                      let id = Int32(exactly: number.doubleValue) else { return nil }
                return id
            }
            if let single = id(value) { return [single] }
            if let list = value as? [Any], case let ids = list.compactMap(id), ids.count == list.count { return ids }
            throw LlamaError.invalidTokenizer(path: path, reason: "eos_token_id is \(value), not a token id or a list of token ids")
        }
        return []
    }

    /// Loads a `tokenizer.json`, with the special tokens that `tokenizer_config.json` beside it
    /// names (`bos_token`, `eos_token`, `unk_token`), else the ids `config.json` and
    /// `generation_config.json` give, else the post-processor's prefix and the usual names.
    static func fromHuggingFace(json path: String) throws -> Tokenizer {
        let hf = try HuggingFaceTokenizer(contentsOf: path)
        let directory = (path as NSString).deletingLastPathComponent
        func object(_ name: String) -> [String: Any]? {
            FileManager.default.contents(atPath: directory + "/" + name)
                .flatMap { try? JSONSerialization.jsonObject(with: $0) as? [String: Any] }
        }
        let tokenizerConfig = object("tokenizer_config.json")
        let configs = [object("generation_config.json"), object("config.json")].compactMap { $0 }
        func token(_ key: String, idKey: String, fallbacks: [String]) -> Int32? {
            // tokenizer_config.json spells a token as a string or as {"content": ...}.
            let value = tokenizerConfig?[key]
            let text = (value as? String) ?? ((value as? [String: Any])?["content"] as? String)
            if let text, let id = hf.id(of: text) { return id }
            for config in configs {
                if let id = config[idKey] as? Int { return Int32(id) }
                if let ids = config[idKey] as? [Int], let first = ids.first { return Int32(first) }
            }
            for name in fallbacks { if let id = hf.id(of: name) { return id } }
            return nil
        }
        // BOS: named, else the post-processor's own (the token it puts first), else a usual name.
        let bos = token("bos_token", idKey: "bos_token_id", fallbacks: []) ?? hf.prefixIds.first
            ?? token("bos_token", idKey: "bos_token_id", fallbacks: ["<s>", "<|begin_of_text|>", "<|endoftext|>"])
        let eos = token("eos_token", idKey: "eos_token_id", fallbacks: ["</s>", "<|end_of_text|>", "<|endoftext|>", "<|im_end|>"])
        let unk = token("unk_token", idKey: "unk_token_id", fallbacks: ["<unk>"])
        guard let bos, let eos else {
            throw LlamaError.invalidTokenizer(path: path,
                reason: "no \(bos == nil ? "BOS" : "EOS") token: name it as \(bos == nil ? "bos_token" : "eos_token") in tokenizer_config.json beside it")
        }
        return Tokenizer(huggingFace: hf, bosId: bos, eosId: eos, unknownId: unk ?? 0)
    }

    /// Throws why conversations cannot be tokenized in the chat format: the model's template was
    /// not recognised, or the tokenizer lacks a special token the format writes.
    public func requireChatFormat() throws {
        if let chatTemplateError { throw chatTemplateError }
        if let chatTemplate {
            // Every plan renders a lone user turn (a prompt) and one exchange (an answer to train on):
            // a template that cannot is refused here, before anything is built on it.
            let user = ChatTemplate.Message(role: .user, content: "Hello.")
            for (messages, generationPrompt) in [([user], true), ([user, ChatTemplate.Message(role: .assistant, content: "Hi.")], false)] {
                do {
                    _ = try chatTemplate.render(messages, addGenerationPrompt: generationPrompt, specialTokens: chatSpecialTokens)
                } catch LlamaError.invalidInput(let reason) {
                    throw LlamaError.invalidTokenizer(path: chatTemplate.path, reason: "its chat template cannot render \(messages.count == 1 ? "a lone user message" : "a user message and an answer"): \(reason)")
                }
            }
        }
        if chatTemplate == nil, let missing = chatFormat.specialTokens.first(where: { tokenId($0) == nil }) {
            throw LlamaError.invalidTokenizer(path: "tokenizer",
                reason: "the \(chatFormat.rawValue) chat format writes \(missing), which this tokenizer does not have")
        }
    }

    /// Renders the model's own chat template with `arguments` besides the conversation (a spec's
    /// `model.chat_template_kwargs`, `--chat-template-kwargs`), checked as `requireChatFormat()` does.
    /// Refused: arguments where conversations render in a named format (its template reads none), a
    /// name the renderer passes itself (`messages`, `add_generation_prompt`, `tools`, `documents`), and
    /// a name the template never mentions (a misspelling would otherwise change nothing, silently).
    public mutating func useChatTemplateArguments(_ arguments: ChatTemplateArguments) throws {
        guard !arguments.isEmpty || chatTemplate != nil else { return }
        if let chatTemplateError { throw chatTemplateError }
        guard var template = chatTemplate else {
            throw LlamaError.invalidInput("chat template arguments (\(arguments.names.joined(separator: ", "))) go to a model's own chat template; "
                                          + "this tokenizer renders conversations in the \(chatFormat.rawValue) format, whose template reads none")
        }
        if let reserved = arguments.names.first(where: ChatTemplateArguments.reservedNames.contains) {
            throw LlamaError.invalidInput("chat template argument \(reserved) is passed by the renderer itself; give it another way")
        }
        if let unread = arguments.names.first(where: { !template.mentions($0) }) {
            throw LlamaError.invalidInput("the model's chat template (\(template.path)) never reads \(unread); "
                                          + "the arguments must be names the template uses (e.g. enable_thinking for Qwen3 and SmolLM3)")
        }
        template.arguments = arguments
        chatTemplate = template
        try requireChatFormat()
    }

    /// Uses `format` for conversations instead of the model's own template (a spec's
    /// `chat_template:`, `--chat-template`), checked as `requireChatFormat()` does.
    public mutating func useChatFormat(_ format: ChatFormat) throws {
        chatFormat = format
        chatTemplateError = nil
        try requireChatFormat()
    }
}
