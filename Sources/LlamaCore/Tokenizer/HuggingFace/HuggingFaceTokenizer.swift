import Foundation

/// A Hugging Face `tokenizers` pipeline read from tokenizer.json: added tokens, normalizer,
/// pre-tokenizer, BPE model, post-processor (its template's special ids) and decoder, giving the
/// ids and text the `tokenizers` library gives.
///
/// Supported: normalizers Sequence, Prepend, Replace, NFC, NFD, NFKC, NFKD, Lowercase, Strip, StripAccents;
/// pre-tokenizers Sequence, Metaspace, ByteLevel, Split, Digits, WhitespaceSplit, Whitespace, Punctuation;
/// the BPE model (without dropout); decoders Sequence, Replace, ByteFallback, Fuse, Strip, ByteLevel,
/// Metaspace; post-processors TemplateProcessing, ByteLevel, RobertaProcessing, BertProcessing, Sequence.
/// Anything else is refused with `LlamaError.invalidTokenizer`.
public struct HuggingFaceTokenizer: Sendable {
    private let normalizer: HFNormalizer?
    private let preTokenizer: HFPreTokenizer?
    private let model: HFBPEModel
    private let decoder: HFDecoder?
    private let added: HFAddedVocabulary
    private let addedById: [Int32: String]
    /// The string decode uses for an added token: its normalized form when `normalized` (as `simple_id_to_token`).
    private let addedDecodeById: [Int32: String]
    private let addedByContent: [[Unicode.Scalar]: Int32]
    private let specialContents: Set<[Unicode.Scalar]>

    /// The ids the post-processor's `single` template puts before the sequence (e.g. LLaMA's BOS); empty if none.
    public let prefixIds: [Int32]
    /// The ids the post-processor's `single` template puts after the sequence; empty if none.
    public let suffixIds: [Int32]
    /// Ids of the added tokens marked special.
    public let specialIds: Set<Int32>
    /// The largest id of the model's vocabulary and the added tokens, plus one.
    public let vocabSize: Int

    /// Reads tokenizer.json at `path`.
    public init(contentsOf path: String) throws {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw LlamaError.io(path: path, reason: "cannot read tokenizer.json: \(error.localizedDescription)")
        }
        try self.init(json: data, path: path)
    }

    /// Parses tokenizer.json's contents; `path` only names the file in errors.
    public init(json: Data, path: String) throws {
        let root: HFJSON
        do {
            root = try HFJSON.parse(json)
        } catch {
            throw LlamaError.invalidTokenizer(path: path, reason: "not JSON: \(error)")
        }
        guard root.members != nil else {
            throw LlamaError.invalidTokenizer(path: path, reason: "the top level is not a JSON object")
        }
        guard let modelJSON = root["model"], modelJSON.members != nil else {
            throw LlamaError.invalidTokenizer(path: path, reason: "no \"model\" object")
        }
        if let truncation = root["truncation"], !truncation.isNull {
            throw LlamaError.invalidTokenizer(path: path, reason: "truncation \(truncation.summary) is not supported (supported: null)")
        }
        // Padding to the batch's longest sequence leaves one sequence as it is.
        if let padding = root["padding"], !padding.isNull,
           !(padding["strategy"]?.string == "BatchLongest" && (padding["pad_to_multiple_of"]?.isNull ?? true)) {
            throw LlamaError.invalidTokenizer(path: path, reason: "padding \(padding.summary) is not supported (supported: null)")
        }
        normalizer = try root["normalizer"].flatMap { $0.isNull ? nil : try HFNormalizer(json: $0, path: path) }
        preTokenizer = try root["pre_tokenizer"].flatMap { $0.isNull ? nil : try HFPreTokenizer(json: $0, path: path) }
        decoder = try root["decoder"].flatMap { $0.isNull ? nil : try HFDecoder(json: $0, path: path) }
        model = try HFBPEModel(json: modelJSON, path: path)

        var tokens: [HFAddedToken] = []
        if let list = root["added_tokens"]?.array {
            tokens = try list.map { try HFAddedToken(json: $0, path: path) }
        }
        added = HFAddedVocabulary(tokens: tokens, normalizer: normalizer)
        var byId: [Int32: String] = [:]
        var decodeById: [Int32: String] = [:]
        var byContent: [[Unicode.Scalar]: Int32] = [:]
        var specials = Set<Int32>()
        var specialContents = Set<[Unicode.Scalar]>()
        for t in tokens {
            byId[t.id] = t.content
            decodeById[t.id] = t.content
            if t.normalized, let normalizer {
                var piece = HFPiece(Array(t.content.unicodeScalars), originZero: 0)
                normalizer.normalize(&piece)
                decodeById[t.id] = String(String.UnicodeScalarView(piece.scalars))
            }
            byContent[Array(t.content.unicodeScalars)] = t.id
            if t.special { specials.insert(t.id); specialContents.insert(Array(t.content.unicodeScalars)) }
        }
        addedById = byId
        addedDecodeById = decodeById
        addedByContent = byContent
        specialIds = specials
        self.specialContents = specialContents
        let maxModel = model.vocabR.keys.max() ?? -1
        let maxAdded = tokens.map(\.id).max() ?? -1
        vocabSize = Int(max(maxModel, maxAdded)) + 1

        if let pp = root["post_processor"], !pp.isNull {
            (prefixIds, suffixIds) = try Self.templateIds(pp, path: path)
        } else {
            (prefixIds, suffixIds) = ([], [])
        }
    }

    private static let supportedPostProcessors = "TemplateProcessing, ByteLevel, RobertaProcessing, BertProcessing, Sequence"

    /// The ids the `single` template puts before and after the sequence.
    private static func templateIds(_ json: HFJSON, path: String) throws -> ([Int32], [Int32]) {
        let type = json["type"]?.string ?? "<missing>"
        switch type {
        case "TemplateProcessing":
            guard let single = json["single"]?.array else {
                throw LlamaError.invalidTokenizer(path: path, reason: "post_processor TemplateProcessing has no \"single\" list")
            }
            let specials = json["special_tokens"] ?? .object([])
            var before: [Int32] = [], after: [Int32] = []
            var seenSequence = false
            for piece in single {
                if piece["Sequence"] != nil {
                    seenSequence = true
                } else if let sp = piece["SpecialToken"], let name = sp["id"]?.string {
                    guard let entry = specials[name], let ids = entry["ids"]?.array?.compactMap(\.int) else {
                        throw LlamaError.invalidTokenizer(
                            path: path, reason: "post_processor TemplateProcessing special token \"\(name)\" is missing from \"special_tokens\"")
                    }
                    if seenSequence { after += ids.map { Int32($0) } } else { before += ids.map { Int32($0) } }
                } else {
                    throw LlamaError.invalidTokenizer(path: path, reason: "post_processor TemplateProcessing single entry \(piece.summary) is not understood")
                }
            }
            return (before, after)
        case "ByteLevel":
            return ([], [])
        case "RobertaProcessing", "BertProcessing":
            func id(_ key: String) throws -> Int32 {
                guard let pair = json[key]?.array, pair.count == 2, let n = pair[1].int else {
                    throw LlamaError.invalidTokenizer(path: path, reason: "post_processor \(type) has no \"\(key)\" [token, id] pair")
                }
                return Int32(n)
            }
            return ([try id("cls")], [try id("sep")])
        case "Sequence":
            guard let list = json["processors"]?.array else {
                throw LlamaError.invalidTokenizer(path: path, reason: "post_processor Sequence has no \"processors\" list")
            }
            var before: [Int32] = [], after: [Int32] = []
            for p in list {
                let (b, a) = try templateIds(p, path: path)
                before = b + before
                after += a
            }
            return (before, after)
        default:
            throw LlamaError.invalidTokenizer(
                path: path, reason: "post_processor type \"\(type)\" is not supported (supported: \(supportedPostProcessors))")
        }
    }

    /// Ids exactly as `tokenizers`' `encode(text, add_special_tokens=False).ids`.
    public func encode(_ text: String) -> [Int32] {
        let scalars = Array(text.unicodeScalars)
        // 1. Added tokens matched on the raw text.
        var splits: [HFAddedVocabulary.Split] = []
        added.split(HFPiece(scalars, originZero: 1), normalizedTokens: false, into: &splits)
        // 2. Normalize the rest, then match the normalized added tokens.
        var normalizedSplits: [HFAddedVocabulary.Split] = []
        normalizedSplits.reserveCapacity(splits.count)
        for split in splits {
            switch split {
            case .token: normalizedSplits.append(split)
            case .text(var piece):
                normalizer?.normalize(&piece)
                added.split(piece, normalizedTokens: true, into: &normalizedSplits)
            }
        }
        // 3. Pre-tokenize and run the model on each piece.
        var ids: [Int32] = []
        ids.reserveCapacity(scalars.count / 2 + 1)
        var cache: [[Unicode.Scalar]: [Int32]] = [:]
        for split in normalizedSplits {
            switch split {
            case .token(let id):
                ids.append(id)
            case .text(let piece):
                var pieces = [piece]
                preTokenizer?.preTokenize(&pieces)
                for p in pieces { model.tokenize(p.scalars, into: &ids, cache: &cache) }
            }
        }
        return ids
    }

    /// The token's string in the added tokens or the vocabulary.
    public func token(_ id: Int32) -> String? {
        addedById[id] ?? model.vocabR[id]
    }

    /// The id of a token string (added tokens first, then the vocabulary).
    public func id(of token: String) -> Int32? {
        let scalars = Array(token.unicodeScalars)
        return addedByContent[scalars] ?? model.vocab[scalars]
    }

    /// Text exactly as `tokenizers`' `decode(ids, skip_special_tokens: skipSpecialTokens)`; unknown ids are skipped.
    public func decode(_ ids: [Int32], skipSpecialTokens: Bool = true) -> String {
        let tokens: [String] = ids.compactMap { id in
            guard let t = addedDecodeById[id] ?? model.vocabR[id] else { return nil }
            if skipSpecialTokens && specialContents.contains(Array(t.unicodeScalars)) { return nil }
            return t
        }
        guard let decoder else { return tokens.joined(separator: " ") }
        var fused = false
        let out = decoder.decodeChain(tokens.map { Array($0.utf8) }, stream: false, fused: &fused)
        return String(decoding: out.joined(), as: UTF8.self)
    }

    /// The bytes one token stands for in the middle of a decoded stream: the decoders applied to the
    /// token alone, without start-of-text effects (Strip, Metaspace's removal of the first space);
    /// a byte-fallback token gives its byte. Special tokens and unknown ids give no bytes.
    public func bytes(of id: Int32) -> [UInt8] {
        if specialIds.contains(id) { return [] }
        guard let t = addedDecodeById[id] ?? model.vocabR[id] else { return [] }
        guard let decoder else { return Array(t.utf8) }
        var fused = false
        return Array(decoder.decodeChain([Array(t.utf8)], stream: true, fused: &fused).joined())
    }

    /// Whether decoding removes a leading space from the first token (a Strip of " " with start >= 1, or a
    /// Metaspace decoder prepending with `first`/`always`): a stream decoder strips it from the first token.
    public var stripsLeadingSpace: Bool {
        decoder?.stripsLeadingSpace ?? false
    }
}
