import Foundation

/// Paths of the fixture copies in the test tree (`Tests/LlamaCoreTests/Resources`: models, tokenizers,
/// their reference outputs).
public enum Fixtures {
    public static let root: String = TestKit.repository + "/Tests/LlamaCoreTests/Resources"
    public static var models: String { root + "/models" }
    public static func model(_ name: String) -> String { models + "/\(name).bin" }
    public static var llama2Bin: String { root + "/tokenizer/llama2/tokenizer.bin" }
    public static var llama2Model: String { root + "/tokenizer/llama2/tokenizer.model" }
    public static var kjvBin: String { root + "/tokenizer/kjv512/tokenizer.bin" }
    public static var kjvModel: String { root + "/tokenizer/kjv512/tokenizer.model" }

    /// The Hugging Face model directories (`hf-llama2-mha`, `hf-bytebpe-gqa`).
    public static func huggingFace(_ name: String) -> String { root + "/hf/\(name)" }
    /// A copy of Hugging Face fixture `name` (a fresh temporary directory) whose tokenizer_config.json carries
    /// `template` as its chat template.
    public static func huggingFace(_ name: String, template: String) throws -> String {
        let dir = try temporaryDirectory()
        let source = huggingFace(name)
        for file in try FileManager.default.contentsOfDirectory(atPath: source) where file != "chat_template.jinja" {
            try FileManager.default.copyItem(atPath: source + "/" + file, toPath: dir + "/" + file)
        }
        let configPath = dir + "/tokenizer_config.json"
        var config = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: configPath))) as! [String: Any]
        config["chat_template"] = template
        try JSONSerialization.data(withJSONObject: config).write(to: URL(fileURLWithPath: configPath))
        return dir
    }

    /// A model family's chat template as the Jinja fixtures carry it (`Tests/JinjaTests/Resources/cases.json`,
    /// e.g. "qwen3").
    public static func jinjaTemplate(_ family: String) throws -> String {
        let data = try Data(contentsOf: URL(fileURLWithPath: TestKit.repository + "/Tests/JinjaTests/Resources/cases.json"))
        let object = try JSONSerialization.jsonObject(with: data) as! [String: Any]
        return (object["templates"] as! [String: String])[family]!
    }

    /// A Hugging Face fixture's reference outputs (`NAME.reference.json`).
    public static func huggingFaceReference(_ name: String) throws -> [String: Any] {
        let data = try Data(contentsOf: URL(fileURLWithPath: root + "/hf/\(name).reference.json"))
        return try JSONSerialization.jsonObject(with: data) as! [String: Any]
    }

    /// The Hugging Face model directories whose config scales RoPE (`rope-llama3`, `rope-linear`; made by
    /// `hf-rope/generate.py`).
    public static func scaledRoPE(_ name: String) -> String { root + "/hf-rope/\(name)" }
    /// A scaled-RoPE fixture's reference outputs (`NAME.reference.json`, with transformers' `inv_freq`).
    public static func scaledRoPEReference(_ name: String) throws -> [String: Any] {
        let data = try Data(contentsOf: URL(fileURLWithPath: root + "/hf-rope/\(name).reference.json"))
        return try JSONSerialization.jsonObject(with: data) as! [String: Any]
    }

    /// The Mistral fixture: a `MistralForCausalLM` directory whose sliding window (48) is shorter than its
    /// `max_position_embeddings` (512), and its reference outputs (made by `hf-mistral/generate.py`).
    public static let mistral = root + "/hf-mistral/mistral-window"
    public static func mistralReference() throws -> [String: Any] {
        let data = try Data(contentsOf: URL(fileURLWithPath: root + "/hf-mistral/mistral-window.reference.json"))
        return try JSONSerialization.jsonObject(with: data) as! [String: Any]
    }

    /// transformers' outputs past the sliding window of the Mistral, Phi-3, Gemma 3 and Gemma 2 fixtures (made by
    /// `hf-window/generate.py` from the stored weights): per model (`mistral`, `phi3`, `gemma3`, `gemma2`) a
    /// reference shaped as the families' own (greedy ids, logits, and for all but Phi-3 SFT gradients; the
    /// Gemmas' reward scores), over sequences of 100 to 112 tokens.
    public static func beyondWindowReference(_ model: String) throws -> [String: Any] {
        let data = try Data(contentsOf: URL(fileURLWithPath: root + "/hf-window/beyond-window.reference.json"))
        let all = try JSONSerialization.jsonObject(with: data) as! [String: Any]
        return all[model] as! [String: Any]
    }

    /// A `Gemma3ForConditionalGeneration` directory whose text model is the Gemma 3 fixture's (`gemma3-mm`: the Hub's
    /// tensor names; `gemma3-mm-modules`: transformers 5's module names and a sparse text_config), made by
    /// `hf-gemma3mm/generate.py`.
    public static func gemma3Multimodal(_ name: String) -> String { root + "/hf-gemma3mm/\(name)" }

    /// The Phi-3 fixture: a `Phi3ForCausalLM` directory (fused `qkv_proj` and `gate_up_proj`, grouped-query
    /// attention, a sliding window of 48 within 512 positions), and its reference outputs (made by
    /// `hf-phi3/generate.py`).
    public static let phi3 = root + "/hf-phi3/phi3-fused"
    public static func phi3Reference() throws -> [String: Any] {
        let data = try Data(contentsOf: URL(fileURLWithPath: root + "/hf-phi3/phi3-fused.reference.json"))
        return try JSONSerialization.jsonObject(with: data) as! [String: Any]
    }

    /// The Qwen2 fixture: a `Qwen2ForCausalLM` directory (query, key and value biases), and transformers'
    /// float64 outputs and SFT gradients on it (made by `hf-qwen2/generate.py`).
    public static let qwen2 = root + "/hf-qwen2/qwen2-bias"
    public static func qwen2Reference() throws -> [String: Any] {
        let data = try Data(contentsOf: URL(fileURLWithPath: root + "/hf-qwen2/qwen2-bias.reference.json"))
        return try JSONSerialization.jsonObject(with: data) as! [String: Any]
    }

    /// The Qwen3 fixture: a `Qwen3ForCausalLM` directory (query/key norms, a head size of 16 at hidden size
    /// 32 with 4 heads), and transformers' float64 outputs and SFT gradients on it (`hf-qwen3/generate.py`).
    public static let qwen3 = root + "/hf-qwen3/qwen3-qknorm"
    public static func qwen3Reference() throws -> [String: Any] {
        let data = try Data(contentsOf: URL(fileURLWithPath: root + "/hf-qwen3/qwen3-qknorm.reference.json"))
        return try JSONSerialization.jsonObject(with: data) as! [String: Any]
    }

    /// The SmolLM3 fixture: a `SmolLM3ForCausalLM` directory whose layers 1 and 3 apply no RoPE, and
    /// transformers' float64 outputs and SFT gradients on it (`hf-smollm3/generate.py`).
    public static let smollm3 = root + "/hf-smollm3/smollm3-nope"
    public static func smollm3Reference() throws -> [String: Any] {
        let data = try Data(contentsOf: URL(fileURLWithPath: root + "/hf-smollm3/smollm3-nope.reference.json"))
        return try JSONSerialization.jsonObject(with: data) as! [String: Any]
    }

    /// The Gemma 3 fixture: a `Gemma3ForCausalLM` directory (GeGLU, a scaled embedding, norms after attention and
    /// feed-forward, query/key norms, a local RoPE base in its two sliding-window layers, an attention scale apart
    /// from its head size) and the same trunk as a `Gemma3TextForSequenceClassification` (`gemma3Reward`), with
    /// transformers' float64 outputs, SFT gradients and reward scores on them (`hf-gemma3/generate.py`).
    public static let gemma3 = root + "/hf-gemma3/gemma3-tiny"
    public static let gemma3Reward = root + "/hf-gemma3/gemma3-tiny-rm"
    /// A Gemma 3 model with the Gemma-style tokenizer (`hf-tokenizers/gemma.tokenizer.json`) and Gemma 3's chat
    /// template; the reference's `chat` holds transformers' rendering of a conversation and its greedy answer.
    public static let gemma3Chat = root + "/hf-gemma3/gemma3-chat"
    public static func gemma3Reference() throws -> [String: Any] {
        let data = try Data(contentsOf: URL(fileURLWithPath: root + "/hf-gemma3/gemma3-tiny.reference.json"))
        return try JSONSerialization.jsonObject(with: data) as! [String: Any]
    }

    /// The Gemma 2 fixture: a `Gemma2ForCausalLM` directory (Gemma 3's blocks without query/key norms or a local RoPE
    /// base, its attention scores and logits softcapped at 2 and 3, low enough to bind) and the same trunk as a
    /// `Gemma2ForSequenceClassification` (`gemma2Reward`), with transformers' float64 outputs, SFT gradients and reward
    /// scores on them (`hf-gemma2/generate.py`).
    public static let gemma2 = root + "/hf-gemma2/gemma2-softcap"
    public static let gemma2Reward = root + "/hf-gemma2/gemma2-softcap-rm"
    public static func gemma2Reference() throws -> [String: Any] {
        let data = try Data(contentsOf: URL(fileURLWithPath: root + "/hf-gemma2/gemma2-softcap.reference.json"))
        return try JSONSerialization.jsonObject(with: data) as! [String: Any]
    }

    /// The OLMo 2 fixture: an `Olmo2ForCausalLM` directory (norms on the blocks' outputs and none on their inputs,
    /// queries and keys normalised across heads) and the same trunk as an `Olmo2ForSequenceClassification`
    /// (`olmo2Reward`), and transformers' float64 outputs, SFT gradients and reward scores on them (`hf-olmo2/generate.py`).
    public static let olmo2 = root + "/hf-olmo2/olmo2-postnorm"
    public static let olmo2Reward = root + "/hf-olmo2/olmo2-postnorm-rm"
    public static func olmo2Reference() throws -> [String: Any] {
        let data = try Data(contentsOf: URL(fileURLWithPath: root + "/hf-olmo2/olmo2-postnorm.reference.json"))
        return try JSONSerialization.jsonObject(with: data) as! [String: Any]
    }

    /// The Hugging Face reward model fixtures (`llama-rm`: a LlamaForSequenceClassification; `qwen2-rm`: a
    /// Qwen2ForSequenceClassification whose pad id is the newline token), with the byte-level fixture's
    /// tokenizer, and transformers' float64 scores of conversations (`hf-reward/generate.py`).
    public static func rewardModel(_ name: String) -> String { root + "/hf-reward/\(name)" }
    public static func rewardModelReference() throws -> [String: Any] {
        let data = try Data(contentsOf: URL(fileURLWithPath: root + "/hf-reward/reward.reference.json"))
        return try JSONSerialization.jsonObject(with: data) as! [String: Any]
    }

    /// The SentencePiece encode cases: `(text, ids)`.
    public static func encodeCases() throws -> [(String, [Int32])] {
        let text = try String(contentsOfFile: root + "/tokenizer/llama2/encode-cases.jsonl", encoding: .utf8)
        return try text.split(separator: "\n").map { line in
            let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: Any]
            return (object["text"] as! String, (object["ids"] as! [Int]).map(Int32.init))
        }
    }

    /// A fresh temporary directory.
    public static func temporaryDirectory() throws -> String {
        let path = TestKit.scratch("llamacore-tests")
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }
}
