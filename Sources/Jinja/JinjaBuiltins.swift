import Foundation

/// The filters, tests, methods and global functions of Jinja2 (and Python's `str`/`dict` methods) that
/// chat templates use, plus transformers' `raise_exception` and `strftime_now`.
enum JinjaBuiltins {
    static func string(_ value: JinjaValue, _ what: String) throws -> String {
        guard case let .string(s) = value else { throw JinjaError.render("\(what): expected a string, got \(value.typeName)") }
        return s
    }

    static func integer(_ value: JinjaValue?, _ what: String) throws -> Int? {
        switch value {
        case nil, .none?: return nil
        case let .int(i)?: return i
        case let .bool(b)?: return b ? 1 : 0
        case let other?: throw JinjaError.render("\(what): expected an integer, got \(other.typeName)")
        }
    }

    /// Python's `str.strip(chars)` family: `chars` nil strips whitespace.
    static func strip(_ s: String, _ chars: String?, leading: Bool, trailing: Bool) -> String {
        let set: (Character) -> Bool = chars.map { c in { c.contains($0) } } ?? { $0.isWhitespace }
        var scalars = Substring(s)
        if leading { scalars = scalars.drop(while: set) }
        if trailing {
            while let last = scalars.last, set(last) { scalars = scalars.dropLast() }
        }
        return String(scalars)
    }

    /// Python's `str.split(sep, maxsplit)`.
    static func split(_ s: String, _ separator: String?, _ maxSplit: Int) -> [String] {
        guard let separator else {
            var parts: [String] = []
            var rest = Substring(s).drop { $0.isWhitespace }
            while !rest.isEmpty {
                if maxSplit >= 0 && parts.count == maxSplit {
                    parts.append(String(rest))
                    return parts
                }
                let word = rest.prefix { !$0.isWhitespace }
                parts.append(String(word))
                rest = rest.dropFirst(word.count).drop { $0.isWhitespace }
            }
            return parts
        }
        var parts: [String] = []
        var rest = s[...]
        while let range = rest.range(of: separator), maxSplit < 0 || parts.count < maxSplit {
            parts.append(String(rest[..<range.lowerBound]))
            rest = rest[range.upperBound...]
        }
        parts.append(String(rest))
        return parts
    }

    /// Python's `str.title()`: each run of letters starts upper-case, the rest lower.
    static func title(_ s: String) -> String {
        var out = ""
        var previousIsLetter = false
        for c in s {
            out += previousIsLetter ? c.lowercased() : c.uppercased()
            previousIsLetter = c.isLetter
        }
        return out
    }

    static func capitalize(_ s: String) -> String {
        guard let first = s.first else { return s }
        return first.uppercased() + s.dropFirst().lowercased()
    }

    // MARK: Methods

    static func method(_ receiver: JinjaValue, _ name: String, _ arguments: [JinjaValue], _ keywords: [String: JinjaValue],
                       expression: String) throws -> JinjaValue {
        switch receiver {
        case let .string(s):
            switch name {
            case "strip", "lstrip", "rstrip":
                let chars = try arguments.first.flatMap { try optionalString($0, name) }
                return .string(strip(s, chars, leading: name != "rstrip", trailing: name != "lstrip"))
            case "upper": return .string(s.uppercased())
            case "lower": return .string(s.lowercased())
            case "title": return .string(title(s))
            case "capitalize": return .string(capitalize(s))
            case "startswith", "endswith":
                let candidates: [String]
                switch arguments.first {
                case let .string(p)?: candidates = [p]
                case let .list(items)?, let .tuple(items)?: candidates = try items.map { try string($0, name) }
                default: throw JinjaError.render("\(name): expected a string or a tuple of strings")
                }
                return .bool(candidates.contains { name == "startswith" ? s.hasPrefix($0) : s.hasSuffix($0) })
            case "split":
                let separator = try arguments.first.flatMap { try optionalString($0, "split") } ?? keywords["sep"].flatMap { try? optionalString($0, "split") }
                let maxSplit = try integer(arguments.count > 1 ? arguments[1] : keywords["maxsplit"], "split") ?? -1
                return .list(split(s, separator, maxSplit).map { .string($0) })
            case "replace":
                guard arguments.count >= 2 else { throw JinjaError.render("replace: expected old and new") }
                return .string(try replace(s, try string(arguments[0], "replace"), try string(arguments[1], "replace"),
                                           count: try integer(arguments.count > 2 ? arguments[2] : nil, "replace")))
            case "join":
                let items = try JinjaRenderer.iterate(arguments.first ?? .list([]), what: "join")
                return .string(try items.map { try string($0, "join") }.joined(separator: s))
            case "find":
                let needle = try string(arguments.first ?? .undefined("find"), "find")
                guard let range = s.range(of: needle) else { return .int(-1) }
                return .int(s.distance(from: s.startIndex, to: range.lowerBound))
            case "count":
                let needle = try string(arguments.first ?? .undefined("count"), "count")
                return .int(needle.isEmpty ? s.count + 1 : s.components(separatedBy: needle).count - 1)
            case "isdigit": return .bool(!s.isEmpty && s.allSatisfy(\.isNumber))
            case "isspace": return .bool(!s.isEmpty && s.allSatisfy(\.isWhitespace))
            default: break
            }
        case let .dict(keys, values):
            switch name {
            case "get":
                guard let key = arguments.first.flatMap(JinjaValue.key) else { throw JinjaError.render("get: expected a key") }
                return values[key] ?? (arguments.count > 1 ? arguments[1] : .none)
            case "items": return .list(keys.map { .tuple([JinjaValue.keyValue($0), values[$0]!]) })
            case "keys": return .list(keys.map(JinjaValue.keyValue))
            case "values": return .list(keys.map { values[$0]! })
            default: break
            }
        case let .undefined(what):
            throw JinjaError.render("\(what) is undefined (calling its \(name))")
        default: break
        }
        throw JinjaError.render("\(expression).\(name)(): \(receiver.typeName) has no method \(name)")
    }

    private static func optionalString(_ value: JinjaValue, _ what: String) throws -> String? {
        if case .none = value { return nil }
        return try string(value, what)
    }

    static func replace(_ s: String, _ old: String, _ new: String, count: Int?) throws -> String {
        guard let count, count >= 0 else { return old.isEmpty ? s : s.replacingOccurrences(of: old, with: new) }
        var out = "", rest = s[...], done = 0
        while done < count, !old.isEmpty, let range = rest.range(of: old) {
            out += rest[..<range.lowerBound] + new
            rest = rest[range.upperBound...]
            done += 1
        }
        return out + rest
    }

    // MARK: Globals

    /// The global functions' names (transformers' `raise_exception` and `strftime_now`, Jinja2's own).
    static let globals: Set<String> = ["raise_exception", "strftime_now", "namespace", "range", "dict"]

    static func global(_ name: String, _ arguments: [JinjaValue], _ keywords: [String: JinjaValue], now: Date) throws -> JinjaValue {
        switch name {
        case "raise_exception":
            throw JinjaError.raised(arguments.first?.rendered ?? "raise_exception")
        case "strftime_now":
            let format = try string(arguments.first ?? .undefined("format"), "strftime_now")
            var time = time_t(now.timeIntervalSince1970)
            var parts = tm()
            localtime_r(&time, &parts)
            var buffer = [Int8](repeating: 0, count: 256)
            let written = strftime(&buffer, buffer.count, format, &parts)
            return .string(String(decoding: buffer.prefix(written).map { UInt8(bitPattern: $0) }, as: UTF8.self))
        case "namespace":
            let ns = JinjaNamespace()
            if case let .dict(keys, values)? = arguments.first { for key in keys { ns.set(key, values[key]!) } }
            for key in keywords.keys.sorted() { ns.set(key, keywords[key]!) }
            return .namespace(ns)
        case "dict":
            let keys = keywords.keys.sorted()
            return .dict(keys, keywords)
        case "range":
            let numbers = try arguments.map { try integer($0, "range") ?? 0 }
            let (start, stop, step) = numbers.count == 1 ? (0, numbers[0], 1) : (numbers[0], numbers.count > 1 ? numbers[1] : 0, numbers.count > 2 ? numbers[2] : 1)
            guard step != 0 else { throw JinjaError.render("range: step cannot be zero") }
            guard (stop - start) / step <= JinjaRenderer.maxBuilt else { throw JinjaError.render("range(\(start), \(stop), \(step)) is too long") }
            return .list(Swift.stride(from: start, to: stop, by: step).map { .int($0) })
        default:
            throw JinjaError.render("\(name) is undefined (called as a function)")
        }
    }

    // MARK: Filters

    static func filter(_ name: String, _ value: JinjaValue, _ arguments: [JinjaValue], _ keywords: [String: JinjaValue]) throws -> JinjaValue {
        func argument(_ i: Int, _ key: String) -> JinjaValue? { i < arguments.count ? arguments[i] : keywords[key] }
        switch name {
        case "trim":
            let chars = try argument(0, "chars").flatMap { try optionalString($0, "trim") }
            return .string(strip(value.rendered, chars, leading: true, trailing: true))
        case "length", "count":
            switch value {
            case let .string(s): return .int(s.count)
            case let .list(items), let .tuple(items): return .int(items.count)
            case let .dict(keys, _): return .int(keys.count)
            case .undefined: return .int(0)
            default: throw JinjaError.render("\(name): \(value.typeName) has no length")
            }
        case "tojson":
            // transformers' tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False).
            let asciiOnly = argument(0, "ensure_ascii")?.isTruthy ?? false
            let indent = try integer(argument(1, "indent"), "tojson")
            var separators: (String, String)?
            if let separatorPair = argument(2, "separators"), case let pair = try JinjaRenderer.iterate(separatorPair, what: "tojson"), pair.count == 2 {
                separators = (try string(pair[0], "tojson"), try string(pair[1], "tojson"))
            }
            let sortKeys = argument(3, "sort_keys")?.isTruthy ?? false
            return .string(try value.json(indent: indent, sortKeys: sortKeys, asciiOnly: asciiOnly, separators: separators))
        case "upper": return .string(value.rendered.uppercased())
        case "lower": return .string(value.rendered.lowercased())
        case "title": return .string(title(value.rendered))
        case "capitalize": return .string(capitalize(value.rendered))
        case "string": return .string(value.rendered)
        case "safe", "e", "escape", "forceescape": return value
        case "default", "d":
            let fallback = argument(0, "default_value") ?? .string("")
            let boolean = argument(1, "boolean")?.isTruthy ?? false
            return value.isUndefined || (boolean && !value.isTruthy) ? fallback : value
        case "first":
            let items = try JinjaRenderer.iterate(value, what: "first")
            return items.first ?? .undefined("the first item of an empty sequence")
        case "last":
            let items = try JinjaRenderer.iterate(value, what: "last")
            return items.last ?? .undefined("the last item of an empty sequence")
        case "join":
            let separator = try argument(0, "d").map { try string($0, "join") } ?? ""
            var items = try JinjaRenderer.iterate(value, what: "join")
            if case let .string(key)? = keywords["attribute"] {
                items = try items.map { try JinjaRenderer.attribute($0, key, expression: .name("item")) }
            }
            return .string(items.map(\.rendered).joined(separator: separator))
        case "replace":
            guard arguments.count >= 2 else { throw JinjaError.render("replace: expected old and new") }
            return .string(try replace(value.rendered, try string(arguments[0], "replace"), try string(arguments[1], "replace"),
                                       count: try integer(argument(2, "count"), "replace")))
        case "list": return .list(try JinjaRenderer.iterate(value, what: "list"))
        case "int":
            switch value {
            case let .int(i): return .int(i)
            case let .double(d): return .int(Int(d))
            case let .bool(b): return .int(b ? 1 : 0)
            case let .string(s):
                if let parsed = Int(s.trimmingCharacters(in: .whitespaces)) { return .int(parsed) }
                return .int(try integer(argument(0, "default"), "int") ?? 0)
            default: return .int(try integer(argument(0, "default"), "int") ?? 0)
            }
        case "float":
            if let number = value.number { return .double(number) }
            if case let .string(s) = value, let d = Double(s.trimmingCharacters(in: .whitespaces)) { return .double(d) }
            return argument(0, "default") ?? .double(0)
        case "abs":
            switch value {
            case let .int(i): return .int(abs(i))
            case let .double(d): return .double(abs(d))
            default: throw JinjaError.render("abs: \(value.typeName) is not a number")
            }
        case "items":
            guard case let .dict(keys, values) = value else {
                if value.isUndefined { return .list([]) }
                throw JinjaError.render("items: \(value.typeName) is not a mapping")
            }
            return .list(keys.map { .tuple([JinjaValue.keyValue($0), values[$0]!]) })
        case "reverse":
            if case let .string(s) = value { return .string(String(s.reversed())) }
            return .list(try JinjaRenderer.iterate(value, what: "reverse").reversed())
        case "unique":
            var seen: [JinjaValue] = []
            for item in try JinjaRenderer.iterate(value, what: "unique") where !seen.contains(where: { JinjaValue.equal($0, item) }) {
                seen.append(item)
            }
            return .list(seen)
        case "sort":
            let items = try JinjaRenderer.iterate(value, what: "sort")
            let key: (JinjaValue) throws -> JinjaValue
            if case let .string(attribute)? = keywords["attribute"] {
                key = { try JinjaRenderer.attribute($0, attribute, expression: .name("item")) }
            } else {
                key = { $0 }
            }
            var sorted = try ascending(items, by: key)
            if argument(0, "reverse")?.isTruthy ?? false { sorted.reverse() }
            return .list(sorted)
        case "dictsort":
            // Jinja2's dictsort(value, case_sensitive=False, by='key', reverse=False): (key, value) pairs.
            guard case let .dict(keys, values) = value else { throw JinjaError.render("dictsort: \(value.typeName) is not a mapping") }
            let caseSensitive = argument(0, "case_sensitive")?.isTruthy ?? false
            let byValue = (argument(1, "by").map { $0.rendered } ?? "key") == "value"
            func sortKey(_ v: JinjaValue) -> JinjaValue {
                if !caseSensitive, case let .string(s) = v { return .string(s.lowercased()) }
                return v
            }
            var pairs = try ascending(keys.map { (JinjaValue.keyValue($0), values[$0]!) }) { sortKey(byValue ? $0.1 : $0.0) }
            if argument(2, "reverse")?.isTruthy ?? false { pairs.reverse() }
            return .list(pairs.map { .tuple([$0.0, $0.1]) })
        case "min", "max":
            let items = try JinjaRenderer.iterate(value, what: name)
            guard var best = items.first else { return .undefined("\(name) of an empty sequence") }
            for item in items.dropFirst() where try JinjaRenderer.binary(name == "min" ? "<" : ">", item, best).isTruthy { best = item }
            return best
        case "sum":
            var total: JinjaValue = .int(0)
            for item in try JinjaRenderer.iterate(value, what: "sum") { total = try JinjaRenderer.binary("+", total, item) }
            return total
        case "indent":
            let width = try integer(argument(0, "width"), "indent") ?? 4
            let first = argument(1, "first")?.isTruthy ?? false
            let blank = argument(2, "blank")?.isTruthy ?? false
            let pad = String(repeating: " ", count: width)
            let lines = value.rendered.components(separatedBy: "\n")
            return .string(lines.enumerated().map { i, line in
                (i == 0 && !first) || (line.isEmpty && !blank) ? line : pad + line
            }.joined(separator: "\n"))
        case "selectattr", "rejectattr":
            guard case let .string(attribute)? = arguments.first else { throw JinjaError.render("\(name): expected an attribute name") }
            guard value.isTruthy else { return .list([]) }
            let items = try JinjaRenderer.iterate(value, what: name)
            return .list(try items.filter { item in
                let field = try JinjaRenderer.attribute(item, attribute, expression: .name("item"))
                let passes: Bool
                if arguments.count > 1 {
                    passes = try test(try string(arguments[1], name), field, Array(arguments.dropFirst(2)))
                } else {
                    passes = field.isTruthy
                }
                return passes == (name == "selectattr")
            })
        case "select", "reject":
            guard value.isTruthy else { return .list([]) }
            let items = try JinjaRenderer.iterate(value, what: name)
            return .list(try items.filter { item in
                let passes = arguments.isEmpty ? item.isTruthy : try test(try string(arguments[0], name), item, Array(arguments.dropFirst()))
                return passes == (name == "select")
            })
        default:
            throw JinjaError.render("the filter \(name) is not supported")
        }
    }

    /// `items` in ascending order of `key`, compared with Python's `<` (a comparison that fails, e.g. a
    /// string against a number, fails the sort).
    static func ascending<T>(_ items: [T], by key: (T) throws -> JinjaValue) throws -> [T] {
        var failure: Error?
        let sorted = items.sorted { a, b in
            do { return try JinjaRenderer.binary("<", try key(a), try key(b)).isTruthy } catch {
                failure = error
                return false
            }
        }
        if let failure { throw failure }
        return sorted
    }

    // MARK: Tests

    static func test(_ name: String, _ value: JinjaValue, _ arguments: [JinjaValue]) throws -> Bool {
        func other() throws -> JinjaValue {
            guard let first = arguments.first else { throw JinjaError.render("the test \(name) needs an argument") }
            return first
        }
        switch name {
        case "defined": return !value.isUndefined
        case "undefined": return value.isUndefined
        case "none": if case .none = value { return true } else { return false }
        case "string": if case .string = value { return true } else { return false }
        case "number": if case .int = value { return true } else if case .double = value { return true } else { return false }
        case "integer": if case .int = value { return true } else { return false }
        case "float": if case .double = value { return true } else { return false }
        case "boolean": if case .bool = value { return true } else { return false }
        case "true": if case .bool(true) = value { return true } else { return false }
        case "false": if case .bool(false) = value { return true } else { return false }
        case "mapping": if case .dict = value { return true } else if case .namespace = value { return true } else { return false }
        case "sequence", "iterable":
            switch value {
            case .list, .tuple, .string, .dict: return true
            default: return false
            }
        case "callable":
            switch value {
            case .macro, .function: return true
            default: return false
            }
        case "odd", "even":
            guard case let .int(i) = value else { throw JinjaError.render("\(name): \(value.typeName) is not an integer") }
            return (i % 2 != 0) == (name == "odd")
        case "divisibleby":
            guard case let .int(i) = value, case let .int(d) = try other(), d != 0 else { throw JinjaError.render("divisibleby: expected integers") }
            return i % d == 0
        case "eq", "equalto", "==": return JinjaValue.equal(value, try other())
        case "ne", "!=": return !JinjaValue.equal(value, try other())
        case "lt", "<": return try JinjaRenderer.binary("<", value, try other()).isTruthy
        case "le", "<=": return try JinjaRenderer.binary("<=", value, try other()).isTruthy
        case "gt", ">", "greaterthan": return try JinjaRenderer.binary(">", value, try other()).isTruthy
        case "ge", ">=": return try JinjaRenderer.binary(">=", value, try other()).isTruthy
        case "in": return try JinjaRenderer.binary("in", value, try other()).isTruthy
        case "sameas":
            let x = try other()
            switch (value, x) {
            case (.none, .none): return true
            case let (.bool(a), .bool(b)): return a == b
            case let (.namespace(a), .namespace(b)): return a === b
            default: return false
            }
        case "lower": return value.rendered == value.rendered.lowercased()
        case "upper": return value.rendered == value.rendered.uppercased()
        default: throw JinjaError.render("the test \(name) is not supported")
        }
    }
}
