import Foundation

/// Values a model's chat template reads beside the conversation: what `transformers`'
/// `apply_chat_template(..., **kwargs)` passes on, and TRL's and vLLM's `chat_template_kwargs`
/// (Qwen3's and SmolLM3's `enable_thinking: false`, LLaMA 3.1's `date_string`). A spec's
/// `model.chat_template_kwargs:` and the CLI's `--chat-template-kwargs JSON` give them; every
/// rendering of the model's template (prompts, training conversations, the end of turn) uses them.
public struct ChatTemplateArguments: Sendable, Equatable {
    /// A JSON value.
    public indirect enum Value: Sendable, Equatable {
        case null
        case bool(Bool)
        case int(Int)
        case double(Double)
        case string(String)
        case list([Value])
        case map([String: Value])
    }

    /// Why arguments cannot be read: `key` is where (`model.chat_template_kwargs.NAME`), `reason` what.
    public struct Invalid: Error, Equatable, CustomStringConvertible {
        public let key: String
        public let reason: String
        public var description: String { "\(key): \(reason)" }
    }

    /// The values by name.
    public private(set) var values: [String: Value] = [:]

    /// The names the renderer itself passes (`apply_chat_template` refuses them as keyword arguments).
    public static let reservedNames: Set<String> = ["messages", "add_generation_prompt", "tools", "documents"]

    /// None.
    public init() {}

    /// `values` as given.
    public init(_ values: [String: Value]) {
        self.values = values
    }

    /// The arguments of a mapping read from YAML or JSON (`Bool`, numbers, strings, lists, mappings,
    /// `NSNull`); `key` names where it came from in the error for a value that is not JSON.
    public init(mapping: Any, key: String) throws {
        guard let object = mapping as? [String: Any] else {
            throw Invalid(key: key, reason: "expected a mapping of names to values, e.g. {enable_thinking: false}")
        }
        for (name, value) in object {
            guard let converted = Value(json: value) else {
                throw Invalid(key: "\(key).\(name)", reason: "\(value) is not a JSON value (null, a boolean, a number, a string, a list or a mapping)")
            }
            values[name] = converted
        }
    }

    /// The arguments of a JSON object's text (`--chat-template-kwargs '{"enable_thinking": false}'`).
    public init(json text: String, key: String) throws {
        guard let object = try? JSONSerialization.jsonObject(with: Data(text.utf8), options: [.fragmentsAllowed]),
              object is [String: Any] else {
            throw Invalid(key: key, reason: "\(text) is not a JSON object, e.g. '{\"enable_thinking\": false}'")
        }
        try self.init(mapping: object, key: key)
    }

    public var isEmpty: Bool { values.isEmpty }

    /// The names, sorted.
    public var names: [String] { values.keys.sorted() }

    /// The values as a template's context takes them (JSON-like Swift values).
    var context: [String: Any] { values.mapValues(\.json) }
}

extension ChatTemplateArguments.Value {
    /// A JSON-like Swift value (as YAML and JSONSerialization read them); nil for anything else.
    init?(json: Any) {
        // Swift's own scalars by their exact type (an NSNumber may cast to Bool on Linux).
        if type(of: json) == Bool.self { self = .bool(json as! Bool); return }
        if type(of: json) == Int.self { self = .int(json as! Int); return }
        if type(of: json) == Double.self { self = .double(json as! Double); return }
        switch json {
        case is NSNull:
            self = .null
        case let text as String:
            self = .string(text)
        case let number as NSNumber:
            // JSONSerialization's numbers say what they were: a boolean ("c"), a float ("d", "f") or an integer.
            switch String(cString: number.objCType) {
            case "c": self = .bool(number.boolValue)
            case "d", "f": self = .double(number.doubleValue)
            default: self = .int(number.intValue)
            }
        case let list as [Any]:
            var values: [Self] = []
            for element in list {
                guard let value = Self(json: element) else { return nil }
                values.append(value)
            }
            self = .list(values)
        case let object as [String: Any]:
            var values: [String: Self] = [:]
            for (name, element) in object {
                guard let value = Self(json: element) else { return nil }
                values[name] = value
            }
            self = .map(values)
        default:
            return nil
        }
    }

    /// The value as a template's context takes it.
    var json: Any {
        switch self {
        case .null: return NSNull()
        case let .bool(value): return value
        case let .int(value): return value
        case let .double(value): return value
        case let .string(value): return value
        case let .list(values): return values.map(\.json)
        case let .map(values): return values.mapValues(\.json)
        }
    }
}
