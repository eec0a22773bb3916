import ArgumentParser
import Foundation
import LlamaCore

/// `rlhf generate`: sample text from a checkpoint.
struct GenerateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "generate",
        abstract: "Generate text from a llama2.c checkpoint or Hugging Face model directory (streams text; --json for one JSON object)."
    )

    @Option(help: "llama2.c checkpoint (legacy or version-1 format) or Hugging Face model directory.")
    var checkpoint: String
    @Option(help: "Tokenizer: llama2.c tokenizer.bin, SentencePiece tokenizer.model, Hugging Face tokenizer.json or model directory (default: a model directory's own; with --prompt, tokenizer.bin beside a checkpoint file).")
    var tokenizer: String?
    @Option(help: "Prompt text (encoded with --tokenizer, else the model directory's own, else tokenizer.bin beside the checkpoint file); BOS is prepended.")
    var prompt: String?
    @Option(help: "A user message: the prompt is the model's chat template's rendering of it (with --system, if given) and the generation prompt, and the answer ends at the template's end of turn; only the answer is printed.")
    var chat: String?
    @Option(help: "A system message before --chat's user message.")
    var system: String?
    @Option(name: .customLong("chat-template"), help: "With --chat: a chat format instead of the model's own template: \(ChatFormat.supportedNames).")
    var chatTemplate: ChatFormat?
    @Option(name: .customLong("chat-template-kwargs"), help: "A JSON object of what the model's own chat template reads beside --chat's conversation, as transformers' apply_chat_template takes them, e.g. '{\"enable_thinking\": false}' for Qwen3 and SmolLM3.")
    var chatTemplateKwargs: String?
    @Option(name: .customLong("prompt-ids"), help: "Prompt as comma-separated token ids, e.g. 1,2,3.")
    var promptIds: String?
    @Option(help: "Maximum tokens to generate (capped by the model's seq_len).")
    var steps: Int = 256
    @Option(help: "Sampling temperature; 0 is greedy.")
    var temperature: Float = 1.0
    @Option(name: .customLong("top-p"), help: "Nucleus sampling mass in (0, 1]; 1 disables it.")
    var topP: Float = 0.9
    @Option(name: .customLong("top-k"), help: "Keep only the K most likely tokens; 0 disables it.")
    var topK: Int = 0
    @Option(help: "RNG seed (default: from the clock; printed with --json).")
    var seed: UInt64?
    @Option(help: "Number of samples of the prompt, decoded together as one batch.")
    var batch: Int = 1
    @Option(help: "Compute threads.")
    var threads: Int = 1
    @Option(help: "Matrix products: float32, or bfloat16 (bfloat16 weights; with --batch above 1, inputs rounded too).")
    var precision: WeightPrecision = .float32
    @Flag(name: .customLong("ignore-eos"), help: "Keep generating after the stop tokens (EOS, the chat format's end of turn, generation_config.json's eos_token_id).")
    var ignoreEOS = false
    @Flag(help: "Print one JSON object instead of streaming text.")
    var json = false

    func validate() throws {
        if [prompt != nil, promptIds != nil, chat != nil].filter({ $0 }).count != 1 {
            throw ValidationError("give exactly one of --prompt, --prompt-ids or --chat")
        }
        if chat == nil, let option = [(system, "--system"), (chatTemplate.map(\.rawValue), "--chat-template"),
                                      (chatTemplateKwargs, "--chat-template-kwargs")].first(where: { $0.0 != nil })?.1 {
            throw ValidationError("\(option) goes with --chat")
        }
        _ = try OptionCheck.chatTemplateArguments(chatTemplateKwargs)
        let beside = Tokenizer.defaultPath(forCheckpoint: checkpoint)
        if (prompt != nil || chat != nil) && tokenizer == nil && !HuggingFaceCheckpoint.isModelDirectory(checkpoint) && !FileManager.default.fileExists(atPath: beside) {
            throw ValidationError("\(chat != nil ? "--chat" : "--prompt") needs a tokenizer to encode the text: give --tokenizer (no \(beside) beside the checkpoint)")
        }
        try OptionCheck.integer(steps, "--steps", 1 ... 1_000_000)
        try OptionCheck.number(temperature, "--temperature", 0 ... 100)
        try OptionCheck.number(topP, "--top-p", 0 ... 1, openBelow: true)
        try OptionCheck.integer(topK, "--top-k", 0 ... 1_000_000)
        try OptionCheck.integer(batch, "--batch", 1 ... 65_536)
        try OptionCheck.threads(threads)
        if let promptIds { _ = try parseIds(promptIds) }
    }

    func run() throws {
        do { try generate() } catch { throw cliFailure(error) }
    }

    private func generate() throws {
        let model = try LlamaModel(checkpoint: checkpoint, precision: precision)
        // Each sample holds a key-value cache of seq_len positions and its logits.
        let c = model.config
        try MemoryBudget.check(batch * (2 * c.nLayers * c.seqLen * c.kvDim + 4 * c.vocabSize + 8 * c.dim) * 4,
                               for: "--batch \(batch) (a \(c.nLayers)-layer key-value cache of \(c.seqLen) positions per sample)")
        // A model directory brings its own tokenizer (for --prompt, EOS and the text).
        let ownTokenizer = HuggingFaceCheckpoint.isModelDirectory(checkpoint)
            && ["tokenizer.json", "tokenizer.model"].contains { FileManager.default.fileExists(atPath: checkpoint + "/" + $0) }
        // Text to encode without --tokenizer: llama2.c's tokenizer.bin beside a checkpoint file, as train and eval take it.
        let besideFile = (prompt != nil || chat != nil) && !HuggingFaceCheckpoint.isModelDirectory(checkpoint) ? Tokenizer.defaultPath(forCheckpoint: checkpoint) : nil
        let tokenizerPath = tokenizer ?? (ownTokenizer ? checkpoint : besideFile)
        let tok = try tokenizerPath.map { path -> Tokenizer in
            var t = try Tokenizer(path: path)
            try t.check(against: model.config, path: path)
            if chat != nil {
                do {
                    if let chatTemplate { try t.useChatFormat(chatTemplate) } else { try t.requireChatFormat() }
                    try t.useChatTemplateArguments(try OptionCheck.chatTemplateArguments(chatTemplateKwargs))
                } catch LlamaError.invalidTokenizer(_, let reason) {
                    throw LlamaError.invalidTokenizer(path: path, reason: reason)
                }
            }
            return t
        }
        let ids: [Int32]
        if let chat, let tok {
            ids = try ChatTemplate.promptIDs(conversation: (system.map { [ChatTemplate.Message(role: .system, content: $0)] } ?? [])
                                             + [ChatTemplate.Message(role: .user, content: chat)], tokenizer: tok)
        } else if let prompt, let tok {
            ids = tok.encode(prompt, bos: true)
        } else {
            ids = try parseIds(promptIds ?? "")
        }
        let seed = self.seed ?? UInt64(Date().timeIntervalSince1970 * 1000)
        let sampling = SamplingSettings(temperature: temperature, topP: topP, topK: topK)
        let maxNew = min(steps, max(0, model.config.seqLen - ids.count))
        let stop: [Int32] = ignoreEOS ? [] : (tok?.stopIds ?? [2])
        let pool = ComputePool(threads: threads)
        defer { pool.shutdown() }
        let generator = TextGenerator(transformer: Transformer(model: model, pool: pool))
        let requests = (0..<batch).map {
            GenerationRequest(promptIds: ids, maxNewTokens: maxNew, sampling: sampling, seed: seed,
                              stream: UInt64($0), stopTokens: stop)
        }
        let start = Date()
        var results: [GenerationResult]
        if batch == 1 {
            var decoder = tok.map { StreamingDecoder(tokenizer: $0, atStart: chat != nil) }
            let stream = !json
            if stream, let prompt { print(prompt, terminator: "") }
            let result = try generator.generate(requests[0]) { token in
                guard stream else { return }
                if decoder != nil {
                    print(decoder!.append(token.id), terminator: "")
                } else {
                    print(" \(token.id)", terminator: "")
                }
                fflush(nil)
            }
            if stream { print(decoder?.finish() ?? ""); fflush(nil) }
            results = [result]
        } else {
            results = try generator.generate(batch: requests)
        }
        let seconds = Date().timeIntervalSince(start)
        let generated = results.reduce(0) { $0 + $1.ids.count }
        let tokensPerSecond = seconds > 0 ? Double(generated) / seconds : 0
        if json {
            func object(_ r: GenerationResult) -> [String: Any] {
                var o: [String: Any] = [
                    "ids": r.ids.map(Int.init),
                    "logprobs": r.logProbs.map(Double.init),
                    "sampling_logprobs": r.samplingLogProbs.map(Double.init),
                    "finish_reason": r.finishReason.rawValue,
                ]
                o["text"] = tok.map { $0.decode(r.ids) } ?? NSNull()
                return o
            }
            var out = object(results[0])
            out["prompt_ids"] = ids.map(Int.init)
            out["tokens_per_second"] = tokensPerSecond
            out["seed"] = seed
            if batch > 1 { out["samples"] = results.map(object) }
            print(jsonLine(out))
        } else {
            if batch > 1 {
                for (i, r) in results.enumerated() {
                    print("--- sample \(i) (\(r.ids.count) tokens, \(r.finishReason.rawValue)) ---")
                    print(tok.map { (prompt ?? "") + $0.decode(r.ids) } ?? r.ids.map(String.init).joined(separator: " "))
                }
            }
            printError(String(format: "%d tokens in %.2f s: %.1f tok/s (seed %llu)", generated, seconds, tokensPerSecond, seed))
        }
    }
}
