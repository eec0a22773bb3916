import Foundation

/// Renders a parsed template: Jinja2's scoping (a loop's body and a macro have their own names; `set`
/// inside them does not reach out, a namespace does), Python's operators, and the filters, tests,
/// methods and globals chat templates use.
struct JinjaRenderer {
    private var frames: [[String: JinjaValue]]
    private let now: Date
    /// Macro calls in progress: a template that recurses without end is refused, not a crashed stack.
    private var callDepth = 0
    static let maxCallDepth = 200

    init(context: [String: JinjaValue], now: Date) {
        frames = [context]
        self.now = now
    }

    enum Flow { case normal, breakLoop, continueLoop }

    mutating func render(_ nodes: [JinjaNode], into out: inout String) throws -> Flow {
        for node in nodes {
            switch node {
            case let .text(text):
                out += text
            case let .output(expression):
                out += try evaluate(expression).rendered
            case let .branches(conditions, bodies, otherwise):
                var taken = false
                for (condition, body) in zip(conditions, bodies) {
                    guard try evaluate(condition).isTruthy else { continue }
                    taken = true
                    let flow = try render(body, into: &out)
                    if flow != .normal { return flow }
                    break
                }
                if !taken {
                    let flow = try render(otherwise, into: &out)
                    if flow != .normal { return flow }
                }
            case let .loop(targets, iterable, condition, body, otherwise):
                try renderLoop(targets: targets, iterable: iterable, condition: condition, body: body, otherwise: otherwise, into: &out)
            case let .set(target, expression):
                try assign(target, try evaluate(expression))
            case let .setBlock(target, body):
                var captured = ""
                _ = try render(body, into: &captured)
                try assign(target, .string(captured))
            case let .macro(name, parameters, defaults, body):
                frames[frames.count - 1][name] = .macro(JinjaMacro(name: name, parameters: parameters, defaults: defaults, body: body))
            case .breakLoop:
                return .breakLoop
            case .continueLoop:
                return .continueLoop
            case let .filterBlock(name, arguments, body):
                var captured = ""
                _ = try render(body, into: &captured)
                out += try applyFilter(name, .string(captured), try arguments.map { try evaluate($0) }, [:]).rendered
            }
        }
        return .normal
    }

    private mutating func renderLoop(targets: [String], iterable: JinjaExpr, condition: JinjaExpr?, body: [JinjaNode],
                                     otherwise: [JinjaNode], into out: inout String) throws {
        var items = try Self.iterate(try evaluate(iterable), what: "for")
        if let condition {
            var kept: [JinjaValue] = []
            for item in items {
                frames.append([:])
                try bind(targets, item)
                let keep = try evaluate(condition).isTruthy
                frames.removeLast()
                if keep { kept.append(item) }
            }
            items = kept
        }
        if items.isEmpty {
            _ = try render(otherwise, into: &out)
            return
        }
        for (i, item) in items.enumerated() {
            frames.append([:])
            defer { frames.removeLast() }
            try bind(targets, item)
            let n = items.count
            var loopKeys = ["index", "index0", "revindex", "revindex0", "first", "last", "length"]
            var loop: [String: JinjaValue] = [
                "index": .int(i + 1), "index0": .int(i), "revindex": .int(n - i), "revindex0": .int(n - i - 1),
                "first": .bool(i == 0), "last": .bool(i == n - 1), "length": .int(n),
            ]
            if i > 0 { loop["previtem"] = items[i - 1]; loopKeys.append("previtem") }
            if i + 1 < n { loop["nextitem"] = items[i + 1]; loopKeys.append("nextitem") }
            frames[frames.count - 1]["loop"] = .dict(loopKeys, loop)
            let flow = try render(body, into: &out)
            if flow == .breakLoop { break }
        }
    }

    private mutating func bind(_ targets: [String], _ item: JinjaValue) throws {
        if targets.count == 1 {
            frames[frames.count - 1][targets[0]] = item
            return
        }
        let parts = try Self.iterate(item, what: "unpacking")
        guard parts.count == targets.count else {
            throw JinjaError.render("cannot unpack \(parts.count) values into \(targets.joined(separator: ", "))")
        }
        for (name, value) in zip(targets, parts) { frames[frames.count - 1][name] = value }
    }

    private mutating func assign(_ target: JinjaSetTarget, _ value: JinjaValue) throws {
        switch target {
        case let .names(names):
            if names.count == 1 {
                frames[frames.count - 1][names[0]] = value
            } else {
                try bind(names, value)
            }
        case let .attribute(name, key):
            guard case let .namespace(ns) = lookup(name) else {
                throw JinjaError.render("cannot set \(name).\(key): \(name) is not a namespace")
            }
            ns.set(key, value)
        }
    }

    private func lookup(_ name: String) -> JinjaValue {
        for frame in frames.reversed() {
            if let value = frame[name] { return value }
        }
        if JinjaBuiltins.globals.contains(name) { return .function(name) }
        return .undefined(name)
    }

    /// The items a `for` (or `list`, `join`, ...) goes through: a list's items, a mapping's keys, a
    /// string's characters; an undefined value is empty.
    static func iterate(_ value: JinjaValue, what: String) throws -> [JinjaValue] {
        switch value {
        case let .list(items), let .tuple(items): return items
        case let .dict(keys, _): return keys.map(JinjaValue.keyValue)
        case let .string(s): return s.map { .string(String($0)) }
        case .undefined: return []
        case let .namespace(ns): return ns.keys.map { .string($0) }
        default: throw JinjaError.render("\(what): \(value.typeName) is not iterable")
        }
    }

    // MARK: Expressions

    mutating func evaluate(_ expression: JinjaExpr) throws -> JinjaValue {
        switch expression {
        case let .literal(literal):
            switch literal {
            case .none: return .none
            case let .bool(b): return .bool(b)
            case let .int(i): return .int(i)
            case let .double(d): return .double(d)
            case let .string(s): return .string(s)
            }
        case let .name(name):
            return lookup(name)
        case let .list(items):
            return .list(try items.map { try evaluate($0) })
        case let .tuple(items):
            return .tuple(try items.map { try evaluate($0) })
        case let .dict(keyExpressions, valueExpressions):
            var keys: [String] = [], values: [String: JinjaValue] = [:]
            for (k, v) in zip(keyExpressions, valueExpressions) {
                let key = try evaluate(k)
                guard let name = JinjaValue.key(key) else { throw JinjaError.render("a mapping's key must be a string, number, boolean or none, got \(key.typeName)") }
                if values[name] == nil { keys.append(name) }
                values[name] = try evaluate(v)
            }
            return .dict(keys, values)
        case let .attribute(base, name):
            return try Self.attribute(try evaluate(base), name, expression: base)
        case let .item(base, index):
            return try Self.item(try evaluate(base), try evaluate(index), expression: base)
        case let .slice(base, start, stop, step):
            return try Self.slice(try evaluate(base), try start.map { try evaluate($0) }, try stop.map { try evaluate($0) },
                                  try step.map { try evaluate($0) })
        case let .call(callee, positional, names, values):
            let arguments = try positional.map { try evaluate($0) }
            var keywords: [String: JinjaValue] = [:]
            for (name, value) in zip(names, values) { keywords[name] = try evaluate(value) }
            return try call(callee, arguments, keywords)
        case let .filter(base, name, positional, names, values):
            let value = try evaluate(base)
            let arguments = try positional.map { try evaluate($0) }
            var keywords: [String: JinjaValue] = [:]
            for (name, value) in zip(names, values) { keywords[name] = try evaluate(value) }
            return try applyFilter(name, value, arguments, keywords)
        case let .test(base, name, arguments, negated):
            let result = try Self.applyTest(name, try evaluate(base), try arguments.map { try evaluate($0) })
            return .bool(result != negated)
        case let .unary(op, operand):
            let value = try evaluate(operand)
            switch op {
            case "not": return .bool(!value.isTruthy)
            case "-":
                switch value {
                case let .int(i): return .int(-i)
                case let .double(d): return .double(-d)
                case let .bool(b): return .int(b ? -1 : 0)
                default: throw JinjaError.render("bad operand for unary -: \(value.typeName)")
                }
            default:
                guard value.number != nil else { throw JinjaError.render("bad operand for unary +: \(value.typeName)") }
                return value
            }
        case let .binary(op, lhs, rhs):
            if op == "and" {
                let left = try evaluate(lhs)
                return left.isTruthy ? try evaluate(rhs) : left
            }
            if op == "or" {
                let left = try evaluate(lhs)
                return left.isTruthy ? left : try evaluate(rhs)
            }
            return try Self.binary(op, try evaluate(lhs), try evaluate(rhs))
        case let .conditional(value, condition, otherwise):
            if try evaluate(condition).isTruthy { return try evaluate(value) }
            return try otherwise.map { try evaluate($0) } ?? .undefined("the else of a conditional")
        }
    }

    static func describe(_ expression: JinjaExpr) -> String {
        switch expression {
        case let .name(n): return n
        case let .attribute(base, name): return describe(base) + "." + name
        case let .item(base, .literal(.string(key))): return describe(base) + "['\(key)']"
        case let .item(base, .literal(.int(i))): return describe(base) + "[\(i)]"
        case let .item(base, _): return describe(base) + "[...]"
        default: return "a value"
        }
    }

    static func attribute(_ value: JinjaValue, _ name: String, expression: JinjaExpr) throws -> JinjaValue {
        switch value {
        case let .dict(_, values): return values[name] ?? .undefined(describe(expression) + "." + name)
        case let .namespace(ns): return ns.values[name] ?? .undefined(describe(expression) + "." + name)
        case let .undefined(what): throw JinjaError.render("\(what) is undefined (reading its attribute \(name))")
        default: return .undefined(describe(expression) + "." + name)
        }
    }

    static func item(_ value: JinjaValue, _ index: JinjaValue, expression: JinjaExpr) throws -> JinjaValue {
        switch (value, index) {
        case let (.dict(_, values), .string(key)): return values[key] ?? .undefined(describe(expression) + "['\(key)']")
        case let (.dict(_, values), .int), let (.dict(_, values), .bool), let (.dict(_, values), .none):
            return values[JinjaValue.key(index)!] ?? .undefined(describe(expression) + "[\(index.repr())]")
        case let (.namespace(ns), .string(key)): return ns.values[key] ?? .undefined(describe(expression) + "['\(key)']")
        case let (.list(items), .int(i)), let (.tuple(items), .int(i)):
            let at = i < 0 ? items.count + i : i
            return items.indices.contains(at) ? items[at] : .undefined(describe(expression) + "[\(i)]")
        case let (.string(s), .int(i)):
            let chars = Array(s)
            let at = i < 0 ? chars.count + i : i
            return chars.indices.contains(at) ? .string(String(chars[at])) : .undefined(describe(expression) + "[\(i)]")
        case let (.undefined(what), _): throw JinjaError.render("\(what) is undefined (reading an item of it)")
        default: return .undefined(describe(expression) + "[\(index.repr())]")
        }
    }

    /// Python's `value[start:stop:step]` on a list or string.
    static func slice(_ value: JinjaValue, _ start: JinjaValue?, _ stop: JinjaValue?, _ step: JinjaValue?) throws -> JinjaValue {
        func integer(_ v: JinjaValue?) throws -> Int? {
            switch v {
            case nil, .none?: return nil
            case let .int(i)?: return i
            case let other?: throw JinjaError.render("slice indices must be integers, got \(other.typeName)")
            }
        }
        let stride = try integer(step) ?? 1
        guard stride != 0 else { throw JinjaError.render("slice step cannot be zero") }
        func indices(_ count: Int) throws -> [Int] {
            func clamp(_ i: Int?, _ defaultValue: Int, low: Int, high: Int) -> Int {
                guard var i else { return defaultValue }
                if i < 0 { i += count }
                return min(max(i, low), high)
            }
            if stride > 0 {
                let from = clamp(try integer(start), 0, low: 0, high: count), to = clamp(try integer(stop), count, low: 0, high: count)
                return Array(Swift.stride(from: from, to: to, by: stride))
            }
            let from = clamp(try integer(start), count - 1, low: -1, high: count - 1), to = clamp(try integer(stop), -1, low: -1, high: count - 1)
            return Array(Swift.stride(from: from, to: to, by: stride))
        }
        switch value {
        case let .list(items): return .list(try indices(items.count).map { items[$0] })
        case let .tuple(items): return .tuple(try indices(items.count).map { items[$0] })
        case let .string(s):
            let chars = Array(s)
            return .string(String(try indices(chars.count).map { chars[$0] }))
        default: throw JinjaError.render("cannot slice \(value.typeName)")
        }
    }

    /// The most elements (or UTF-8 bytes) one operation may build: a template is not a way to exhaust memory.
    static let maxBuilt = 1 << 24

    static func binary(_ op: String, _ a: JinjaValue, _ b: JinjaValue) throws -> JinjaValue {
        func fail() -> JinjaError { .render("unsupported operands for \(op): \(a.typeName) and \(b.typeName)") }
        switch op {
        case "~": return .string(a.rendered + b.rendered)
        case "==": return .bool(JinjaValue.equal(a, b))
        case "!=": return .bool(!JinjaValue.equal(a, b))
        case "in", "not in":
            let found: Bool
            switch b {
            case let .string(s):
                guard case let .string(needle) = a else { throw fail() }
                found = s.contains(needle) || needle.isEmpty
            case let .list(items), let .tuple(items): found = items.contains { JinjaValue.equal($0, a) }
            case let .dict(_, values):
                guard let key = JinjaValue.key(a) else { found = false; break }
                found = values[key] != nil
            case let .namespace(ns):
                guard case let .string(key) = a else { found = false; break }
                found = ns.values[key] != nil
            case .undefined: found = false
            default: throw fail()
            }
            return .bool(found == (op == "in"))
        case "<", ">", "<=", ">=":
            let order: Int
            if let x = a.number, let y = b.number {
                order = x < y ? -1 : x > y ? 1 : 0
            } else if case let .string(x) = a, case let .string(y) = b {
                let xs = Array(x.unicodeScalars.map(\.value)), ys = Array(y.unicodeScalars.map(\.value))
                order = xs.lexicographicallyPrecedes(ys) ? -1 : xs == ys ? 0 : 1
            } else {
                throw fail()
            }
            switch op {
            case "<": return .bool(order < 0)
            case ">": return .bool(order > 0)
            case "<=": return .bool(order <= 0)
            default: return .bool(order >= 0)
            }
        case "+":
            switch (a, b) {
            case let (.string(x), .string(y)): return .string(x + y)
            case let (.list(x), .list(y)): return .list(x + y)
            case let (.tuple(x), .tuple(y)): return .tuple(x + y)
            default: break
            }
        case "*":
            switch (a, b) {
            case let (.string(s), .int(n)), let (.int(n), .string(s)):
                guard s.utf8.count * max(0, n) <= maxBuilt else { throw JinjaError.render("a string repeated \(n) times is too long") }
                return .string(String(repeating: s, count: max(0, n)))
            case let (.list(l), .int(n)), let (.int(n), .list(l)):
                guard l.count * max(0, n) <= maxBuilt else { throw JinjaError.render("a list repeated \(n) times is too long") }
                return .list(Array([[JinjaValue]](repeating: l, count: max(0, n)).joined()))
            default: break
            }
        default: break
        }
        // Arithmetic: integers stay integers where Python's do (bools count as integers).
        func integer(_ v: JinjaValue) -> Int? {
            switch v {
            case let .int(i): return i
            case let .bool(b): return b ? 1 : 0
            default: return nil
            }
        }
        if let x = integer(a), let y = integer(b) {
            switch op {
            case "+": return .int(x + y)
            case "-": return .int(x - y)
            case "*": return .int(x * y)
            case "/":
                guard y != 0 else { throw JinjaError.render("division by zero") }
                return .double(Double(x) / Double(y))
            case "//":
                guard y != 0 else { throw JinjaError.render("integer division by zero") }
                return .int(Int((Double(x) / Double(y)).rounded(.down)))
            case "%":
                guard y != 0 else { throw JinjaError.render("modulo by zero") }
                return .int(((x % y) + y) % y)
            case "**":
                if y >= 0 { return .int(Int(pow(Double(x), Double(y)))) }
                return .double(pow(Double(x), Double(y)))
            default: break
            }
        }
        if let x = a.number, let y = b.number {
            switch op {
            case "+": return .double(x + y)
            case "-": return .double(x - y)
            case "*": return .double(x * y)
            case "/":
                guard y != 0 else { throw JinjaError.render("division by zero") }
                return .double(x / y)
            case "//":
                guard y != 0 else { throw JinjaError.render("division by zero") }
                return .double((x / y).rounded(.down))
            case "%":
                guard y != 0 else { throw JinjaError.render("modulo by zero") }
                return .double(x - y * (x / y).rounded(.down))
            case "**": return .double(pow(x, y))
            default: break
            }
        }
        throw fail()
    }

    // MARK: Calls

    private mutating func call(_ callee: JinjaExpr, _ arguments: [JinjaValue], _ keywords: [String: JinjaValue]) throws -> JinjaValue {
        if case let .attribute(base, method) = callee {
            let receiver = try evaluate(base)
            if case let .dict(_, values) = receiver, case let .macro(macro)? = values[method] {
                return try callMacro(macro, arguments, keywords)
            }
            return try JinjaBuiltins.method(receiver, method, arguments, keywords, expression: Self.describe(base))
        }
        let value = try evaluate(callee)
        if case let .macro(macro) = value { return try callMacro(macro, arguments, keywords) }
        if case let .function(name) = value { return try JinjaBuiltins.global(name, arguments, keywords, now: now) }
        throw JinjaError.render("\(Self.describe(callee)) is \(value.typeName), not callable")
    }

    private mutating func callMacro(_ macro: JinjaMacro, _ arguments: [JinjaValue], _ keywords: [String: JinjaValue]) throws -> JinjaValue {
        guard arguments.count <= macro.parameters.count else {
            throw JinjaError.render("the macro \(macro.name) takes \(macro.parameters.count) arguments, got \(arguments.count)")
        }
        guard callDepth < Self.maxCallDepth else {
            throw JinjaError.render("the macro \(macro.name) calls itself (or others) more than \(Self.maxCallDepth) deep")
        }
        callDepth += 1
        defer { callDepth -= 1 }
        var frame: [String: JinjaValue] = [:]
        for (i, parameter) in macro.parameters.enumerated() {
            if i < arguments.count {
                frame[parameter] = arguments[i]
            } else if let value = keywords[parameter] {
                frame[parameter] = value
            } else if let defaultValue = macro.defaults[i] {
                frame[parameter] = try evaluate(defaultValue)
            } else {
                frame[parameter] = .undefined(parameter)
            }
        }
        // A macro sees the template's top-level names and its own, not its caller's loop variables.
        let saved = frames
        frames = [frames[0], frame]
        defer { frames = saved }
        var out = ""
        _ = try render(macro.body, into: &out)
        return .string(out)
    }

    // MARK: Filters and tests

    private mutating func applyFilter(_ name: String, _ value: JinjaValue, _ arguments: [JinjaValue], _ keywords: [String: JinjaValue]) throws -> JinjaValue {
        switch name {
        case "map":
            // Jinja2's map, select and their kin go through nothing for a false value (none).
            guard value.isTruthy else { return .list([]) }
            let items = try Self.iterate(value, what: "map")
            if let attribute = keywords["attribute"] {
                guard case let .string(key) = attribute else { throw JinjaError.render("map: attribute must be a string") }
                return .list(try items.map { item in
                    let found = try Self.attribute(item, key, expression: .name("item"))
                    if found.isUndefined, let fallback = keywords["default"] { return fallback }
                    return found
                })
            }
            guard case let .string(filter)? = arguments.first else { throw JinjaError.render("map: give a filter name or attribute=") }
            let rest = Array(arguments.dropFirst())
            return .list(try items.map { try applyFilter(filter, $0, rest, [:]) })
        default:
            return try JinjaBuiltins.filter(name, value, arguments, keywords)
        }
    }

    static func applyTest(_ name: String, _ value: JinjaValue, _ arguments: [JinjaValue]) throws -> Bool {
        try JinjaBuiltins.test(name, value, arguments)
    }
}
