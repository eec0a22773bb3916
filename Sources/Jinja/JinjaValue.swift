import Foundation

/// A namespace object (`namespace(count=0)`): the one value a template can change from inside a loop.
final class JinjaNamespace {
    var keys: [String] = []
    var values: [String: JinjaValue] = [:]

    func set(_ key: String, _ value: JinjaValue) {
        if values[key] == nil { keys.append(key) }
        values[key] = value
    }
}

/// A macro defined in the template.
struct JinjaMacro {
    let name: String
    let parameters: [String]
    let defaults: [JinjaExpr?]
    let body: [JinjaNode]
}

/// A value while a template renders, with Python's semantics (truth, equality, `str`, `repr`, JSON).
indirect enum JinjaValue {
    /// A name or key that is not there (its name, for messages).
    case undefined(String)
    case none
    case bool(Bool)
    case int(Int)
    case double(Double)
    case string(String)
    case list([JinjaValue])
    /// A Python tuple: `(a, b)` literals, `items()` and `dictsort` pairs. A list but for `repr`.
    case tuple([JinjaValue])
    /// A mapping in insertion order.
    case dict([String], [String: JinjaValue])
    case namespace(JinjaNamespace)
    case macro(JinjaMacro)
    /// A global function (`raise_exception`, `strftime_now`, `namespace`, `range`, `dict`), by name: defined
    /// (`strftime_now is defined`), callable.
    case function(String)

    /// A mapping's key for a key value: a string is itself; an integer, boolean or none (Python's dicts
    /// take them: `{0: 'a'}`) is spelled apart from every string.
    static func key(_ value: JinjaValue) -> String? {
        switch value {
        case let .string(s): return s
        case let .int(i): return "\u{1}i\(i)"
        case let .bool(b): return "\u{1}i\(b ? 1 : 0)"
        case .none: return "\u{1}n"
        default: return nil
        }
    }

    /// The key value a mapping's key stands for (the inverse of `key(_:)`).
    static func keyValue(_ key: String) -> JinjaValue {
        guard key.hasPrefix("\u{1}") else { return .string(key) }
        if key == "\u{1}n" { return .none }
        return Int(key.dropFirst(2)).map { .int($0) } ?? .string(key)
    }

    /// A JSON-like Swift value as a template value: `NSNull`, `Bool`, numbers, strings, arrays, and
    /// mappings, either `[(String, Any)]` (in that order, as Python's dicts keep it) or `[String: Any]`
    /// (keys sorted).
    static func from(json: Any) -> JinjaValue {
        if let pairs = json as? [(String, Any)] {
            var keys: [String] = [], values: [String: JinjaValue] = [:]
            for (key, value) in pairs where values[key] == nil {
                keys.append(key)
                values[key] = from(json: value)
            }
            return .dict(keys, values)
        }
        // Swift's own scalars by their exact type (an NSNumber may cast to Bool on Linux).
        if type(of: json) == Bool.self { return .bool(json as! Bool) }
        if type(of: json) == Int.self { return .int(json as! Int) }
        if type(of: json) == Double.self { return .double(json as! Double) }
        switch json {
        case is NSNull: return .none
        case let s as String: return .string(s)
        case let n as NSNumber:
            // JSONSerialization's numbers say what they were: a boolean ("c"), a float ("d", "f") or an integer.
            switch String(cString: n.objCType) {
            case "c": return .bool(n.boolValue)
            case "d", "f": return .double(n.doubleValue)
            default: return .int(n.intValue)
            }
        case let list as [Any]: return .list(list.map(from(json:)))
        case let object as [String: Any]:
            let keys = object.keys.sorted()
            return .dict(keys, object.mapValues(from(json:)))
        default: return .string("\(json)")
        }
    }

    /// Python's truth value.
    var isTruthy: Bool {
        switch self {
        case .undefined, .none: return false
        case let .bool(b): return b
        case let .int(i): return i != 0
        case let .double(d): return d != 0
        case let .string(s): return !s.isEmpty
        case let .list(l), let .tuple(l): return !l.isEmpty
        case let .dict(keys, _): return !keys.isEmpty
        case .namespace, .macro, .function: return true
        }
    }

    var isUndefined: Bool {
        if case .undefined = self { return true }
        return false
    }

    /// The value as `{{ }}` prints it: Python's `str`, an undefined value as nothing.
    var rendered: String {
        switch self {
        case .undefined: return ""
        case let .string(s): return s
        default: return repr(top: true)
        }
    }

    /// Python's `str` (top) or `repr` (inside containers).
    func repr(top: Bool = false) -> String {
        switch self {
        case .undefined: return ""
        case .none: return "None"
        case let .bool(b): return b ? "True" : "False"
        case let .int(i): return String(i)
        case let .double(d): return JinjaValue.pythonFloat(d)
        case let .string(s): return top ? s : JinjaValue.pythonStringRepr(s)
        case let .list(items): return "[" + items.map { $0.repr() }.joined(separator: ", ") + "]"
        case let .tuple(items): return "(" + items.map { $0.repr() }.joined(separator: ", ") + (items.count == 1 ? ",)" : ")")
        case let .dict(keys, values):
            return "{" + keys.map { JinjaValue.keyValue($0).repr() + ": " + values[$0]!.repr() }.joined(separator: ", ") + "}"
        case let .namespace(ns):
            return "<Namespace " + ns.keys.map { "\($0)=" + ns.values[$0]!.repr() }.joined(separator: ", ") + ">"
        case let .macro(m): return "<Macro '\(m.name)'>"
        case let .function(name): return "<function \(name)>"
        }
    }

    /// Python's `repr(float)`: the shortest digits that read back, with `.0` for whole numbers.
    static func pythonFloat(_ d: Double) -> String {
        if d.isNaN { return "nan" }
        if d.isInfinite { return d > 0 ? "inf" : "-inf" }
        if d == d.rounded(), abs(d) < 1e16 { return String(format: "%.1f", d) }
        var text = "\(d)"
        // Swift writes 1e-05 as "1e-05" like Python; large exponents as "1e+16" in both.
        if text.contains("e") && !text.contains("e-") && !text.contains("e+") { text = text.replacingOccurrences(of: "e", with: "e+") }
        return text
    }

    /// Python's `repr(str)`: single quotes unless the text holds one and no double quote.
    static func pythonStringRepr(_ s: String) -> String {
        let quote: Character = s.contains("'") && !s.contains("\"") ? "\"" : "'"
        var out = String(quote)
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if Character(scalar) == quote { out += "\\" + String(quote) } else if scalar.value < 0x20 || scalar.value == 0x7F {
                    out += String(format: "\\x%02x", scalar.value)
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out + String(quote)
    }

    /// Python's `==` (1 == 1.0, True == 1).
    static func equal(_ a: JinjaValue, _ b: JinjaValue) -> Bool {
        switch (a, b) {
        case (.undefined, .undefined), (.none, .none): return true
        case let (.string(x), .string(y)): return x == y
        case let (.list(x), .list(y)), let (.tuple(x), .tuple(y)): return x.count == y.count && zip(x, y).allSatisfy { equal($0, $1) }
        case let (.dict(kx, vx), .dict(ky, vy)):
            return Set(kx) == Set(ky) && kx.allSatisfy { equal(vx[$0]!, vy[$0]!) }
        case let (.namespace(x), .namespace(y)): return x === y
        default:
            if let x = a.number, let y = b.number { return x == y }
            return false
        }
    }

    /// The value as a number where Python treats it as one (bool, int, float).
    var number: Double? {
        switch self {
        case let .bool(b): return b ? 1 : 0
        case let .int(i): return Double(i)
        case let .double(d): return d
        default: return nil
        }
    }

    /// What the value is, for messages.
    var typeName: String {
        switch self {
        case let .undefined(name): return "undefined (\(name))"
        case .none: return "none"
        case .bool: return "a boolean"
        case .int: return "an integer"
        case .double: return "a float"
        case .string: return "a string"
        case .list: return "a list"
        case .tuple: return "a tuple"
        case .dict: return "a mapping"
        case .namespace: return "a namespace"
        case .macro: return "a macro"
        case .function: return "a function"
        }
    }

    /// `json.dumps(value, ensure_ascii=False, indent=indent, sort_keys=sortKeys)`, as transformers'
    /// `tojson` filter writes it.
    func json(indent: Int?, sortKeys: Bool = false, asciiOnly: Bool = false, separators: (String, String)? = nil,
              level: Int = 0) throws -> String {
        let itemSeparator = separators?.0 ?? (indent == nil ? ", " : ",")
        let keySeparator = separators?.1 ?? ": "
        func newline(_ depth: Int) -> String { indent.map { "\n" + String(repeating: " ", count: $0 * depth) } ?? "" }
        func nested(_ value: JinjaValue) throws -> String {
            try value.json(indent: indent, sortKeys: sortKeys, asciiOnly: asciiOnly, separators: separators, level: level + 1)
        }
        switch self {
        case .none: return "null"
        case let .bool(b): return b ? "true" : "false"
        case let .int(i): return String(i)
        case let .double(d):
            if d.isNaN { return "NaN" }
            if d.isInfinite { return d > 0 ? "Infinity" : "-Infinity" }
            return JinjaValue.pythonFloat(d)
        case let .string(s): return JinjaValue.jsonString(s, asciiOnly: asciiOnly)
        case let .list(items), let .tuple(items):
            if items.isEmpty { return "[]" }
            return "[" + newline(level + 1) + (try items.map(nested).joined(separator: itemSeparator + newline(level + 1))) + newline(level) + "]"
        case let .dict(keys, values):
            if keys.isEmpty { return "{}" }
            let ordered = sortKeys ? keys.sorted() : keys
            return "{" + newline(level + 1)
                + (try ordered.map { JinjaValue.jsonString(JinjaValue.keyValue($0).rendered, asciiOnly: asciiOnly) + keySeparator + (try nested(values[$0]!)) }
                    .joined(separator: itemSeparator + newline(level + 1))) + newline(level) + "}"
        case let .namespace(ns):
            return try JinjaValue.dict(ns.keys, ns.values).json(indent: indent, sortKeys: sortKeys, asciiOnly: asciiOnly, separators: separators, level: level)
        case let .undefined(name): throw JinjaError.render("tojson: \(name) is undefined")
        case let .macro(m): throw JinjaError.render("tojson: the macro \(m.name) is not JSON")
        case let .function(name): throw JinjaError.render("tojson: the function \(name) is not JSON")
        }
    }

    /// A JSON string literal as Python's `json.dumps(..., ensure_ascii=False)` writes it.
    static func jsonString(_ s: String, asciiOnly: Bool = false) -> String {
        var out = "\""
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case "\u{08}": out += "\\b"
            case "\u{0C}": out += "\\f"
            default:
                if scalar.value < 0x20 || (asciiOnly && scalar.value > 0x7E) {
                    // Python writes characters past the BMP as a surrogate pair.
                    for unit in String(scalar).utf16 { out += String(format: "\\u%04x", unit) }
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out + "\""
    }
}
