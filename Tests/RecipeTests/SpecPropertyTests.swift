import ClusterRuntime
import Foundation
import Recipe
import PropertyBased
import Testing

/// The spec parser under random values: every key of every section and step, set to values of every
/// YAML kind (integers at and past their bounds, floats, NaN and infinities, strings, booleans, null,
/// lists, mappings), and unknown keys anywhere. A spec is either taken as written or refused naming the
/// key at fault (or the step or section holding it); it never crashes, and a value of the wrong kind is
/// never taken.
@Suite struct SpecPropertyTests {
    /// A spec that uses every key (JSON is YAML: it is written out as JSON).
    static var base: [String: Any] {
        [
            "coordinator": "tcp://127.0.0.1:5555", "heartbeat_ms": 200 as Int, "orphan_timeout_s": 30 as Int, "metrics": "tcp://127.0.0.1:9555",
            "decode_slots": 16 as Int, "precision": ["generator": "bfloat16", "kv_cache": "bfloat16"],
            "lora": ["rank": 8 as Int, "alpha": 16.0, "dropout": 0.05, "targets": ["wq", "wv"]],
            "hosts": [["name": "a", "address": "local",
                       "workers": ["generator": 1 as Int, "reward-model": 1 as Int, "safety-model": 1 as Int, "learner": 1 as Int, "reference-policy": 1 as Int]]],
            "model": ["checkpoint": SpecTests.checkpoint],
            "task": ["seed": 1 as Int, "eval_prompts": 10 as Int, "eval_temperature": 1.0, "eval_samples": 1 as Int, "preference_pairs": 100 as Int],
            "plan": [
                ["generate": ["prompts": 4 as Int, "samples": 2 as Int, "max_new_tokens": 8 as Int, "temperature": 1.0]],
                ["round": ["prompts": 4 as Int, "samples": 2 as Int, "max_new_tokens": 8 as Int, "temperature": 1.0, "learning_rate": 0.0001]],
                ["hold": ["seconds": 1.5]],
                ["evaluate": ["name": "SFT"]],
                ["train_rm": ["model": "reward-model", "pairs": 100 as Int, "epochs": 1.0, "batch_size": 8 as Int, "learning_rate": 0.0001, "margin": "small"]],
                ["rs_round": ["name": "V1", "prompts": 16 as Int, "samples": 4 as Int, "temperature": 1.0, "max_new_tokens": 16 as Int, "epochs": 1 as Int, "batch_size": 4 as Int,
                              "learning_rate": 0.0001, "new_pairs": 8 as Int, "rm_learning_rate": 0.0001, "from_sft": true]],
                ["ppo_round": ["name": "V5", "iterations": 2 as Int, "rollouts": 8 as Int, "mini_batch": 4 as Int, "epochs": 1 as Int, "learning_rate": 0.00006,
                               "value_learning_rate": 0.0001, "beta": 0.05, "kl_estimator": "k1", "kl_target": 4.0, "whitening": "running",
                               "temperature": 1.0, "max_new_tokens": 16 as Int, "gamma": 1.0, "lambda": 0.95, "new_pairs": 0 as Int, "rm_every": 1 as Int,
                               "rm_learning_rate": 0.0001]],
            ],
        ]
    }

    /// A path into the spec: keys and list indices, written as the parser names keys (`plan[6].ppo_round.beta`).
    enum Step: Sendable, Equatable { case key(String), index(Int) }

    static func name(_ path: [Step]) -> String {
        path.reduce("") { text, step in
            switch step {
            case let .key(k): return text.isEmpty ? k : text + "." + k
            case let .index(i): return text + "[\(i)]"
            }
        }
    }

    /// Every leaf (scalar) of the base spec, with its value.
    static func leaves(_ value: Any, _ path: [Step] = []) -> [([Step], Any)] {
        if let map = value as? [String: Any] { return map.keys.sorted().flatMap { leaves(map[$0]!, path + [.key($0)]) } }
        if let list = value as? [Any] { return list.enumerated().flatMap { leaves($0.element, path + [.index($0.offset)]) } }
        return [(path, value)]
    }

    static func setting(_ root: Any, _ path: ArraySlice<Step>, to value: Any) -> Any {
        guard let first = path.first else { return value }
        switch first {
        case let .key(k):
            var map = root as! [String: Any]
            map[k] = setting(map[k] as Any, path.dropFirst(), to: value)
            return map
        case let .index(i):
            var list = root as! [Any]
            list[i] = setting(list[i], path.dropFirst(), to: value)
            return list
        }
    }

    static let paths: [[Step]] = leaves(base).map(\.0)

    /// Values of every kind: in-range and out-of-range numbers, specials, text, structures.
    static var hostile: [Any] { [
        0 as Int, 1 as Int, 2 as Int, -1 as Int, 7 as Int, 64 as Int, 65 as Int, 1_000 as Int, 65_535 as Int, 65_536 as Int,
        99_999 as Int, (1 << 31) as Int, (1 << 40) as Int, Int.max, Int.min,
        0.0, 0.5, 1.0, 1.5, -0.5, 1e-300, 1e-50, 1e300, 3.4e38, 1e39,
        "", "four", "1", "0", "tcp://127.0.0.1:1", "tcp://127.0.0.1:99999", "tcp://h:*", "k3", "batch", "large", "none",
        "safety-model", "generator", "V9", "/nonexistent", "ünïcødé", String(repeating: "x", count: 300),
        true, false, NSNull(), [1 as Int, 2 as Int], ["a": 1 as Int], [String: Any](), [Any](),
    ] }

    /// The spec as YAML text (JSON, with NaN and the infinities written as YAML's .nan and .inf).
    static func yaml(_ value: Any) -> String {
        switch value {
        case let d as Double where d.isNaN: return ".nan"
        case let d as Double where d.isInfinite: return d > 0 ? ".inf" : "-.inf"
        case let map as [String: Any]:
            return "{" + map.keys.sorted().map { "\(yaml($0)): \(yaml(map[$0]!))" }.joined(separator: ", ") + "}"
        case let list as [Any]: return "[" + list.map(yaml).joined(separator: ", ") + "]"
        case is NSNull: return "null"
        case let b as Bool: return b ? "true" : "false"
        case let i as Int: return "\(i)"
        case let s as String:
            let data = try! JSONSerialization.data(withJSONObject: [s], options: [.withoutEscapingSlashes])
            return String(String(decoding: data, as: UTF8.self).dropFirst().dropLast())
        case let d as Double: return "\(d)"
        default: return "\(value)"
        }
    }

    /// What the parser said about one spec: nil if it was taken, else the key it named.
    static func refusal(_ spec: Any) -> String? {
        do {
            _ = try ClusterSpec.parse(yaml(spec), baseDirectory: "/")
            return nil
        } catch let e as ClusterSpec.Invalid {
            return e.key
        } catch {
            return "(not a ClusterSpec.Invalid: \(error))"
        }
    }

    /// Whether `named` blames `path`: the key itself, or the section or step that holds it.
    static func blames(_ named: String, _ path: String) -> Bool {
        if named == path || path.hasPrefix(named + ".") || path.hasPrefix(named + "[") { return true }
        // The one rule across keys: a host starting no worker of a role that a step needs is refused
        // naming the step.
        return path.contains(".workers.") && named.hasPrefix("plan[")
    }

    @Test func theBaseSpecIsValid() {
        #expect(SpecPropertyTests.refusal(SpecPropertyTests.base) == nil)
        #expect(SpecPropertyTests.paths.count >= 60)
    }

    /// One key set to a value of any kind: taken as written (the same kind of value the base holds), or
    /// refused naming that key.
    @Test func anyValueAtAnyKeyIsTakenOrRefusedNamingTheKey() async {
        let cases = Gen<Int>.int(in: 0 ... SpecPropertyTests.paths.count - 1)
        let values = Gen<Int>.int(in: 0 ... SpecPropertyTests.hostile.count - 1)
        await propertyCheck(count: 3_000, input: cases, values) { p, v in
            let path = SpecPropertyTests.paths[p], value = SpecPropertyTests.hostile[v]
            let key = SpecPropertyTests.name(path)
            let original = SpecPropertyTests.leaves(SpecPropertyTests.base).first { $0.0 == path }!.1
            let spec = SpecPropertyTests.setting(SpecPropertyTests.base, path[...], to: value)
            if let named = SpecPropertyTests.refusal(spec) {
                #expect(SpecPropertyTests.blames(named, key), "\(key) = \(SpecPropertyTests.yaml(value)): refused naming \(named)")
            } else {
                // Taken: a value of the kind the key holds (no string read as a number, no float as a count).
                let kindOf = { (x: Any) -> String in
                    switch x {
                    case is Bool: return "bool"
                    case is Int: return "number"
                    case is Double: return "number"
                    case is String: return "string"
                    default: return "other"
                    }
                }
                #expect(kindOf(value) == kindOf(original), "\(key) = \(SpecPropertyTests.yaml(value)) was taken for a \(kindOf(original))")
                if original is Int && !(value is Int) {
                    Issue.record("\(key) = \(SpecPropertyTests.yaml(value)) was taken for an integer")
                }
            }
        }
    }

    /// An unknown key anywhere a mapping is: refused, naming it.
    @Test func anUnknownKeyAnywhereIsRefusedNamingIt() async {
        // The mappings of the base spec: the root and every path whose value is a mapping.
        func mappings(_ value: Any, _ path: [Step] = []) -> [[Step]] {
            if let map = value as? [String: Any] {
                return [path] + map.keys.sorted().flatMap { mappings(map[$0]!, path + [.key($0)]) }
            }
            if let list = value as? [Any] { return list.enumerated().flatMap { mappings($0.element, path + [.index($0.offset)]) } }
            return []
        }
        let all = mappings(SpecPropertyTests.base).filter { path in
            // A step's entry ({generate: {...}}) names the step; its arguments are the mapping below.
            !(path.count == 2 && path[0] == .key("plan"))
        }
        let words = ["temprature", "sample", "epoch", "x", "Prompts", "learning-rate", "batchsize", "name2"]
        await propertyCheck(count: 400, input: Gen<Int>.int(in: 0 ... all.count - 1), Gen<Int>.int(in: 0 ... words.count - 1)) { m, w in
            let path = all[m], word = words[w]
            let spec = SpecPropertyTests.setting(SpecPropertyTests.base, (path + [.key(word)])[...], to: 1)
            let expected = SpecPropertyTests.name(path + [.key(word)])
            let named = SpecPropertyTests.refusal(spec)
            #expect(named == expected, "unknown key \(expected): \(named ?? "taken")")
        }
    }
}
