import Foundation
import LlamaCore

/// How a run writes each round's policy (`rounds/NAME/`): llama2.c's `policy.bin`, and with
/// `export: hf` also `policy-hf/`, a Hugging Face model directory with the policy's tokenizer and
/// chat template that `transformers` loads. A policy whose RMSNorm epsilon, RoPE theta or RoPE scaling
/// llama2.c's format cannot hold (a Hugging Face model's, say) is written as a Hugging Face directory only.
public struct PolicyExport: Sendable, Equatable {
    /// The formats a round's policy is written in.
    public enum Format: String, Sendable, CaseIterable {
        case llama2c, hf
    }

    /// `export:` in the spec (llama2c: the default).
    public var format: Format = .llama2c
    /// The Hugging Face weights' type.
    public var dtype: SafetensorsFile.DType = .float32
    /// The policy's tokenizer (carried into Hugging Face directories).
    public var tokenizerPath: String?
    /// The chat format the spec names (nil: the tokenizer's own).
    public var chatFormat: ChatFormat?

    public init(format: Format = .llama2c, dtype: SafetensorsFile.DType = .float32, tokenizerPath: String? = nil, chatFormat: ChatFormat? = nil) {
        self.format = format
        self.dtype = dtype
        self.tokenizerPath = tokenizerPath
        self.chatFormat = chatFormat
    }

    /// Writes `weights` into the round's `directory`; returns the paths written.
    @discardableResult
    public func write(_ weights: ModelWeights, directory: String) throws -> [String] {
        var written: [String] = []
        if Checkpoint.legacyHolds(weights.config) {
            try Checkpoint.writeLegacy(weights, to: directory + "/policy.bin")
            written.append(directory + "/policy.bin")
        }
        if format == .hf || written.isEmpty {
            guard let tokenizerPath else { throw LlamaError.invalidInput("a Hugging Face export needs the policy's tokenizer") }
            try HuggingFaceExport.write(weights: weights, tokenizerPath: tokenizerPath, chatFormat: chatFormat, dtype: dtype,
                                        to: directory + "/policy-hf")
            written.append(directory + "/policy-hf")
        }
        return written
    }
}
