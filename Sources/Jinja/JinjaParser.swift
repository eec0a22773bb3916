/// A constant in a template.
enum JinjaLiteral: Sendable, Equatable {
    case none, bool(Bool), int(Int), double(Double), string(String)
}

/// An expression of a template.
indirect enum JinjaExpr: Sendable {
    case literal(JinjaLiteral)
    case name(String)
    case list([JinjaExpr])
    case tuple([JinjaExpr])
    case dict([JinjaExpr], [JinjaExpr])
    case attribute(JinjaExpr, String)
    case item(JinjaExpr, JinjaExpr)
    case slice(JinjaExpr, JinjaExpr?, JinjaExpr?, JinjaExpr?)
    case call(JinjaExpr, [JinjaExpr], [String], [JinjaExpr])
    case filter(JinjaExpr, String, [JinjaExpr], [String], [JinjaExpr])
    case test(JinjaExpr, String, [JinjaExpr], negated: Bool)
    case unary(String, JinjaExpr)
    case binary(String, JinjaExpr, JinjaExpr)
    /// `then if condition else otherwise` (otherwise nil: undefined).
    case conditional(JinjaExpr, JinjaExpr, JinjaExpr?)
}

/// Where a `set` writes: names (unpacking a sequence into several) or a namespace's attribute.
enum JinjaSetTarget: Sendable {
    case names([String])
    case attribute(String, String)
}

/// A statement or text of a template.
indirect enum JinjaNode: Sendable {
    case text(String)
    case output(JinjaExpr)
    case branches([JinjaExpr], [[JinjaNode]], otherwise: [JinjaNode])
    case loop(targets: [String], iterable: JinjaExpr, condition: JinjaExpr?, body: [JinjaNode], otherwise: [JinjaNode])
    case set(JinjaSetTarget, JinjaExpr)
    case setBlock(JinjaSetTarget, [JinjaNode])
    case macro(name: String, parameters: [String], defaults: [JinjaExpr?], body: [JinjaNode])
    case breakLoop
    case continueLoop
    /// A filter block: the body's output through a filter.
    case filterBlock(String, [JinjaExpr], [JinjaNode])
}

/// Reads the pieces of `JinjaLexer` into statements and expressions (Jinja2's grammar and operator
/// precedence: `if-else` < `or` < `and` < `not` < comparisons, `in`, `is` < `+ -` < `~` < `* / // %` <
/// `**` < unary `-` < postfix `.a [i] (args) | filter is test`).
struct JinjaParser {
    private let pieces: [JinjaLexer.Piece]
    private var index = 0
    /// Blocks open around the statement being read: nesting deeper than `maxDepth` is refused (a
    /// template is read without recursing past what the stack holds).
    private var depth = 0
    static let maxDepth = 100

    init(pieces: [JinjaLexer.Piece]) {
        self.pieces = pieces
    }

    /// The whole template.
    mutating func parseTemplate() throws -> [JinjaNode] {
        let (nodes, end) = try parseNodes(until: [])
        if let end { throw JinjaError.syntax(line: end.line, "unexpected {% \(end.keyword) %}") }
        return nodes
    }

    /// Nodes up to a statement whose keyword is in `terminators` (returned with its remaining tokens),
    /// or to the end (nil).
    private mutating func parseNodes(until terminators: Set<String>) throws -> ([JinjaNode], (keyword: String, tokens: [JinjaLexer.Token], line: Int)?) {
        depth += 1
        defer { depth -= 1 }
        guard depth <= Self.maxDepth else { throw JinjaError.syntax(line: lastLine, "blocks nested more than \(Self.maxDepth) deep") }
        var nodes: [JinjaNode] = []
        while index < pieces.count {
            let piece = pieces[index]
            index += 1
            switch piece {
            case let .text(text):
                nodes.append(.text(text))
            case let .output(tokens, line):
                var expression = ExpressionParser(tokens: tokens, line: line)
                nodes.append(.output(try expression.parseWhole()))
            case let .statement(tokens, line):
                guard case let .name(keyword)? = tokens.first else { throw JinjaError.syntax(line: line, "a statement without a keyword") }
                let rest = Array(tokens.dropFirst())
                if terminators.contains(keyword) { return (nodes, (keyword, rest, line)) }
                nodes.append(try parseStatement(keyword, rest, line: line))
            }
        }
        if !terminators.isEmpty {
            throw JinjaError.syntax(line: lastLine, "the template ends before {% \(terminators.sorted().joined(separator: " or ")) %}")
        }
        return (nodes, nil)
    }

    private var lastLine: Int {
        for piece in pieces.reversed() {
            switch piece {
            case let .output(_, line), let .statement(_, line): return line
            case .text: continue
            }
        }
        return 1
    }

    private mutating func parseStatement(_ keyword: String, _ tokens: [JinjaLexer.Token], line: Int) throws -> JinjaNode {
        var expression = ExpressionParser(tokens: tokens, line: line)
        switch keyword {
        case "if":
            var conditions = [try expression.parseWhole()]
            var bodies: [[JinjaNode]] = []
            var otherwise: [JinjaNode] = []
            while true {
                let (body, end) = try parseNodes(until: ["elif", "else", "endif"])
                bodies.append(body)
                guard let end else { break }
                if end.keyword == "elif" {
                    var next = ExpressionParser(tokens: end.tokens, line: end.line)
                    conditions.append(try next.parseWhole())
                } else if end.keyword == "else" {
                    let (body, _) = try parseNodes(until: ["endif"])
                    otherwise = body
                    break
                } else {
                    break
                }
            }
            return .branches(conditions, bodies, otherwise: otherwise)
        case "for":
            var targets: [String] = [try expression.name()]
            while expression.accept(.symbol(",")) { targets.append(try expression.name()) }
            try expression.expect(.name("in"))
            let iterable = try expression.parseExpression(allowConditional: false)
            var condition: JinjaExpr?
            if expression.accept(.name("if")) { condition = try expression.parseExpression() }
            _ = expression.accept(.name("recursive"))
            try expression.expectEnd()
            let (body, end) = try parseNodes(until: ["else", "endfor"])
            var otherwise: [JinjaNode] = []
            if end?.keyword == "else" { otherwise = try parseNodes(until: ["endfor"]).0 }
            return .loop(targets: targets, iterable: iterable, condition: condition, body: body, otherwise: otherwise)
        case "set":
            let first = try expression.name()
            var target = JinjaSetTarget.names([first])
            if expression.accept(.symbol(".")) {
                target = .attribute(first, try expression.name())
            } else {
                var names = [first]
                while expression.accept(.symbol(",")) { names.append(try expression.name()) }
                target = .names(names)
            }
            if expression.accept(.symbol("=")) {
                let value = try expression.parseTupleOrExpression()
                try expression.expectEnd()
                return .set(target, value)
            }
            try expression.expectEnd()
            let (body, _) = try parseNodes(until: ["endset"])
            return .setBlock(target, body)
        case "macro":
            let name = try expression.name()
            try expression.expect(.symbol("("))
            var parameters: [String] = [], defaults: [JinjaExpr?] = []
            while !expression.accept(.symbol(")")) {
                parameters.append(try expression.name())
                defaults.append(expression.accept(.symbol("=")) ? try expression.parseExpression() : nil)
                if !expression.accept(.symbol(",")) {
                    try expression.expect(.symbol(")"))
                    break
                }
            }
            try expression.expectEnd()
            let (body, _) = try parseNodes(until: ["endmacro"])
            return .macro(name: name, parameters: parameters, defaults: defaults, body: body)
        case "break":
            try expression.expectEnd()
            return .breakLoop
        case "continue":
            try expression.expectEnd()
            return .continueLoop
        case "generation":
            // transformers' marker of the assistant's text: rendered as its body.
            try expression.expectEnd()
            let (body, _) = try parseNodes(until: ["endgeneration"])
            return .branches([.literal(.bool(true))], [body], otherwise: [])
        case "filter":
            let name = try expression.name()
            var arguments: [JinjaExpr] = []
            if expression.accept(.symbol("(")) { arguments = try expression.arguments().positional }
            try expression.expectEnd()
            let (body, _) = try parseNodes(until: ["endfilter"])
            return .filterBlock(name, arguments, body)
        case "endif", "endfor", "else", "elif", "endset", "endmacro", "endfilter", "endgeneration":
            throw JinjaError.syntax(line: line, "unexpected {% \(keyword) %}")
        default:
            throw JinjaError.syntax(line: line, "the statement {% \(keyword) %} is not supported")
        }
    }
}

/// A Pratt-style reader of one tag's expression tokens.
struct ExpressionParser {
    private let tokens: [JinjaLexer.Token]
    private var position = 0
    private let line: Int
    /// Sub-expressions open (brackets, unary operators): nesting deeper than `JinjaParser.maxDepth` is refused.
    private var depth = 0

    private mutating func enter() throws {
        depth += 1
        guard depth <= JinjaParser.maxDepth else { throw error("an expression nested more than \(JinjaParser.maxDepth) deep") }
    }

    init(tokens: [JinjaLexer.Token], line: Int) {
        self.tokens = tokens
        self.line = line
    }

    private var next: JinjaLexer.Token? { position < tokens.count ? tokens[position] : nil }

    private func error(_ reason: String) -> JinjaError { .syntax(line: line, reason) }

    mutating func accept(_ token: JinjaLexer.Token) -> Bool {
        if next == token {
            position += 1
            return true
        }
        return false
    }

    mutating func expect(_ token: JinjaLexer.Token) throws {
        guard accept(token) else { throw error("expected \(Self.describe(token)), found \(next.map(Self.describe) ?? "the tag's end")") }
    }

    mutating func expectEnd() throws {
        if let next { throw error("unexpected \(Self.describe(next))") }
    }

    mutating func name() throws -> String {
        guard case let .name(name)? = next else { throw error("expected a name, found \(next.map(Self.describe) ?? "the tag's end")") }
        position += 1
        return name
    }

    static func describe(_ token: JinjaLexer.Token) -> String {
        switch token {
        case let .name(n): return n
        case let .string(s): return "'\(s)'"
        case let .integer(i): return "\(i)"
        case let .float(f): return "\(f)"
        case let .symbol(s): return s
        }
    }

    /// The tag's whole content as one expression.
    mutating func parseWhole() throws -> JinjaExpr {
        let expression = try parseTupleOrExpression()
        try expectEnd()
        return expression
    }

    /// `a, b` (a tuple, read as a list) or one expression.
    mutating func parseTupleOrExpression() throws -> JinjaExpr {
        let first = try parseExpression()
        guard next == .symbol(",") else { return first }
        var items = [first]
        while accept(.symbol(",")) {
            if next == nil { break }
            items.append(try parseExpression())
        }
        return .list(items)
    }

    mutating func parseExpression(allowConditional: Bool = true) throws -> JinjaExpr {
        try enter()
        defer { depth -= 1 }
        let value = try parseOr()
        guard allowConditional, accept(.name("if")) else { return value }
        let condition = try parseOr()
        let otherwise = accept(.name("else")) ? try parseExpression() : nil
        return .conditional(value, condition, otherwise)
    }

    private mutating func parseOr() throws -> JinjaExpr {
        var left = try parseAnd()
        while accept(.name("or")) { left = .binary("or", left, try parseAnd()) }
        return left
    }

    private mutating func parseAnd() throws -> JinjaExpr {
        var left = try parseNot()
        while accept(.name("and")) { left = .binary("and", left, try parseNot()) }
        return left
    }

    private mutating func parseNot() throws -> JinjaExpr {
        if accept(.name("not")) {
            try enter()
            defer { depth -= 1 }
            return .unary("not", try parseNot())
        }
        return try parseCompare()
    }

    private mutating func parseCompare() throws -> JinjaExpr {
        var left = try parseMath1()
        while true {
            if case let .symbol(s)? = next, ["==", "!=", "<", ">", "<=", ">="].contains(s) {
                position += 1
                left = .binary(s, left, try parseMath1())
            } else if accept(.name("in")) {
                left = .binary("in", left, try parseMath1())
            } else if next == .name("not"), position + 1 < tokens.count, tokens[position + 1] == .name("in") {
                position += 2
                left = .binary("not in", left, try parseMath1())
            } else {
                return left
            }
        }
    }

    private mutating func parseMath1() throws -> JinjaExpr {
        var left = try parseConcat()
        while case let .symbol(s)? = next, s == "+" || s == "-" {
            position += 1
            left = .binary(s, left, try parseConcat())
        }
        return left
    }

    private mutating func parseConcat() throws -> JinjaExpr {
        var left = try parseMath2()
        while accept(.symbol("~")) { left = .binary("~", left, try parseMath2()) }
        return left
    }

    private mutating func parseMath2() throws -> JinjaExpr {
        var left = try parsePow()
        while case let .symbol(s)? = next, ["*", "/", "//", "%"].contains(s) {
            position += 1
            left = .binary(s, left, try parsePow())
        }
        return left
    }

    private mutating func parsePow() throws -> JinjaExpr {
        var left = try parseUnary()
        while accept(.symbol("**")) { left = .binary("**", left, try parseUnary()) }
        return left
    }

    /// Jinja2's `parse_unary`: the filters and tests after `-x` apply to `-x` (`-3 | abs` is 3).
    private mutating func parseUnary(withFilters: Bool = true) throws -> JinjaExpr {
        try enter()
        defer { depth -= 1 }
        var value: JinjaExpr
        if accept(.symbol("-")) {
            value = .unary("-", try parseUnary(withFilters: false))
        } else if accept(.symbol("+")) {
            value = .unary("+", try parseUnary(withFilters: false))
        } else {
            value = try parsePostfix(try parsePrimary())
        }
        return withFilters ? try parseFilters(value) : value
    }

    private mutating func parsePrimary() throws -> JinjaExpr {
        guard let token = next else { throw error("an expression is missing") }
        position += 1
        switch token {
        case let .string(s):
            var text = s
            // Adjacent strings concatenate, as in Python.
            while case let .string(more)? = next {
                text += more
                position += 1
            }
            return .literal(.string(text))
        case let .integer(i): return .literal(.int(i))
        case let .float(f): return .literal(.double(f))
        case let .name(n):
            switch n {
            case "true", "True": return .literal(.bool(true))
            case "false", "False": return .literal(.bool(false))
            case "none", "None": return .literal(.none)
            default: return .name(n)
            }
        case .symbol("("):
            if accept(.symbol(")")) { return .tuple([]) }
            let inner = try parseExpression()
            if next == .symbol(",") {
                var items = [inner]
                while accept(.symbol(",")) {
                    if next == .symbol(")") { break }
                    items.append(try parseExpression())
                }
                try expect(.symbol(")"))
                return .tuple(items)
            }
            try expect(.symbol(")"))
            return inner
        case .symbol("["):
            var items: [JinjaExpr] = []
            while !accept(.symbol("]")) {
                items.append(try parseExpression())
                if !accept(.symbol(",")) {
                    try expect(.symbol("]"))
                    break
                }
            }
            return .list(items)
        case .symbol("{"):
            var keys: [JinjaExpr] = [], values: [JinjaExpr] = []
            while !accept(.symbol("}")) {
                keys.append(try parseExpression())
                try expect(.symbol(":"))
                values.append(try parseExpression())
                if !accept(.symbol(",")) {
                    try expect(.symbol("}"))
                    break
                }
            }
            return .dict(keys, values)
        default:
            throw error("unexpected \(Self.describe(token))")
        }
    }

    private mutating func parsePostfix(_ base: JinjaExpr) throws -> JinjaExpr {
        var value = base
        while true {
            if accept(.symbol(".")) {
                if case let .integer(i)? = next {
                    position += 1
                    value = .item(value, .literal(.int(i)))
                } else {
                    value = .attribute(value, try name())
                }
            } else if accept(.symbol("[")) {
                var parts: [JinjaExpr?] = []
                var current: JinjaExpr?
                var isSlice = false
                while true {
                    if accept(.symbol("]")) {
                        parts.append(current)
                        break
                    }
                    if accept(.symbol(":")) {
                        isSlice = true
                        parts.append(current)
                        current = nil
                        continue
                    }
                    current = try parseExpression()
                }
                if isSlice {
                    while parts.count < 3 { parts.append(nil) }
                    value = .slice(value, parts[0], parts[1], parts[2])
                } else {
                    guard let index = parts.first ?? nil else { throw error("an empty subscript") }
                    value = .item(value, index)
                }
            } else if accept(.symbol("(")) {
                let (positional, names, values) = try arguments()
                value = .call(value, positional, names, values)
            } else {
                return value
            }
        }
    }

    /// Call arguments after `(`, up to and including `)`: positional, then keyword names and values.
    mutating func arguments() throws -> (positional: [JinjaExpr], names: [String], values: [JinjaExpr]) {
        var positional: [JinjaExpr] = [], names: [String] = [], values: [JinjaExpr] = []
        while !accept(.symbol(")")) {
            if case let .name(n)? = next, position + 1 < tokens.count, tokens[position + 1] == .symbol("=") {
                position += 2
                names.append(n)
                values.append(try parseExpression())
            } else {
                positional.append(try parseExpression())
            }
            if !accept(.symbol(",")) {
                try expect(.symbol(")"))
                break
            }
        }
        return (positional, names, values)
    }

    private mutating func parseFilters(_ base: JinjaExpr) throws -> JinjaExpr {
        var value = base
        while true {
            if accept(.symbol("|")) {
                var filterName = try name()
                while accept(.symbol(".")) { filterName += "." + (try name()) }
                var positional: [JinjaExpr] = [], names: [String] = [], values: [JinjaExpr] = []
                if accept(.symbol("(")) { (positional, names, values) = try arguments() }
                value = .filter(value, filterName, positional, names, values)
            } else if accept(.name("is")) {
                let negated = accept(.name("not"))
                var testName = try name()
                if testName == "none" { testName = "none" }
                var arguments: [JinjaExpr] = []
                if accept(.symbol("(")) {
                    arguments = try self.arguments().positional
                } else if let token = next, Self.startsTestArgument(token) {
                    arguments = [try parsePostfix(try parsePrimary())]
                }
                value = .test(value, testName, arguments, negated: negated)
            } else {
                return value
            }
        }
    }

    /// Whether `token` starts the argument of a test written without parentheses (`is divisibleby 3`,
    /// `is sameas false`), and not what follows the test (`and`, `or`, `else`, `)`, ...).
    private static func startsTestArgument(_ token: JinjaLexer.Token) -> Bool {
        switch token {
        case .string, .integer, .float: return true
        case let .name(n): return !["and", "or", "else", "if", "in", "not", "is", "recursive"].contains(n)
        case .symbol: return false
        }
    }
}
