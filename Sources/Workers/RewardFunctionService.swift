import AsyncHTTPClient
import ClusterRuntime
import Distributed
import Foundation
import LlamaCore
import NIOCore
import Synchronization
import Wire

/// The compute of the reward-function role: an external command spoken to in JSON lines, or an HTTP
/// endpoint in OpenRLHF's remote reward shape. To a command, each answer is one line on its stdin,
/// `{"prompt", "response", "prompt_id", "sample_id", ...the prompt record's other fields}`, and the command
/// writes `{"reward": number}` per line, in order. To an endpoint, a call is one `POST` of
/// `{"query": [prompt + response, ...], "prompts": [...], "labels": [...]}` answered by
/// `{"rewards": [...]}`. A command that crashes, an endpoint that answers other than 200, anything but a
/// finite number per answer, or a call past the timeout fails the call with the command's stderr or the
/// HTTP status (the coordinator's step then fails, or, for a dead worker, the call goes to another
/// worker); a reward is never made up. `RewardFunction` is its distributed actor.
public final class RewardFunctionService: RoleService, Sendable {
    /// Where the rewards come from.
    public enum Backend: Sendable {
        case command(JSONLineCommand)
        /// The endpoint's URL and the prompt record's field sent as each answer's label.
        case endpoint(url: String, labelKey: String)
    }

    public let backend: Backend
    public let timeoutSeconds: Double
    private let answered = Atomic<UInt64>(0)

    /// A reward function running `arguments` in `directory`, each batch within `timeoutSeconds`.
    public init(arguments: [String], directory: String? = nil, timeoutSeconds: Double = 600) throws {
        guard !arguments.isEmpty else { throw LlamaError.invalidInput("a reward function needs a command") }
        backend = .command(JSONLineCommand(arguments: arguments, timeoutSeconds: timeoutSeconds, directory: directory))
        self.timeoutSeconds = timeoutSeconds
    }

    /// A reward function behind `url` (http or https), each call within `timeoutSeconds`; each answer's label
    /// is its prompt record's `labelKey` field.
    public init(endpoint url: String, labelKey: String = "label", timeoutSeconds: Double = 600) throws {
        guard let parsed = URL(string: url), ["http", "https"].contains(parsed.scheme ?? ""), parsed.host != nil else {
            throw LlamaError.invalidInput("\(url) is not an http:// or https:// URL")
        }
        backend = .endpoint(url: url, labelKey: labelKey)
        self.timeoutSeconds = timeoutSeconds
    }

    public var policyVersion: UInt64 { 0 }
    public var weightsChecksum: UInt32 { 0 }
    /// Answers scored so far.
    public var tokensProcessed: UInt64 { answered.load(ordering: .relaxed) }
    public var modelConfig: LlamaConfig? { nil }

    /// One reward per item of `request`, in order.
    public func reward(_ request: RewardRequest) async throws -> FunctionRewards {
        guard !request.items.isEmpty else { throw LlamaError.invalidInput("the request has no answers") }
        let values: [Float]
        switch backend {
        case let .command(command): values = try rewards(request.items, command: command)
        case let .endpoint(url, labelKey): values = try await rewards(request.items, url: url, labelKey: labelKey)
        }
        answered.add(UInt64(values.count), ordering: .relaxed)
        return FunctionRewards(values: values)
    }

    private func rewards(_ items: [RewardItem], command: JSONLineCommand) throws -> [Float] {
        let lines = try items.map { item -> [String: Any] in
            var record = RewardFunctionService.fields(item)
            record["prompt"] = item.prompt
            record["response"] = item.response
            record["prompt_id"] = item.promptID
            record["sample_id"] = item.sampleID
            record["messages"] = item.messages.map { ["role": $0.role.rawValue, "content": $0.content] }
            guard JSONSerialization.isValidJSONObject(record) else { throw LlamaError.invalidInput("answer \(item.promptID)/\(item.sampleID): fields are not JSON") }
            return record
        }
        let answers = try command.call(lines)
        return try answers.enumerated().map { i, answer -> Float in
            guard let reward = RewardFunctionService.finite(answer["reward"]) else {
                throw JSONLineCommand.Failure(description: "\(command.commandLine): answer \(i + 1) of \(lines.count) has no finite \"reward\" number: "
                                              + "\(answer)")
            }
            return reward
        }
    }

    private func rewards(_ items: [RewardItem], url: String, labelKey: String) async throws -> [Float] {
        let labels = items.map { item -> Any in RewardFunctionService.fields(item)[labelKey] ?? NSNull() }
        let body: [String: Any] = ["query": items.map { $0.prompt + $0.response }, "prompts": items.map(\.prompt), "labels": labels]
        var request = HTTPClientRequest(url: url)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        request.body = .bytes(ByteBuffer(bytes: try JSONSerialization.data(withJSONObject: body, options: [.sortedKeys])))
        let response: HTTPClientResponse
        var text = ByteBuffer()
        do {
            response = try await HTTPClient.shared.execute(request, timeout: .milliseconds(Int64(timeoutSeconds * 1000)))
            // An error's body is read only when its length is given (a body that runs to the connection's close
            // would hold the status back until the timeout).
            if response.status == .ok || response.headers.first(name: "Content-Length") != nil {
                text = try await response.body.collect(upTo: 64 << 20)
            }
        } catch {
            throw JSONLineCommand.Failure(description: "POST \(url): \(error)")
        }
        let bytes = Data(text.readableBytesView)
        guard response.status == .ok else {
            throw JSONLineCommand.Failure(description: "POST \(url): HTTP \(response.status.code) \(response.status.reasonPhrase)"
                                          + (bytes.isEmpty ? "" : ": " + String(decoding: bytes.prefix(500), as: UTF8.self)))
        }
        guard let object = try? JSONSerialization.jsonObject(with: bytes) as? [String: Any], let list = object["rewards"] as? [Any] else {
            throw JSONLineCommand.Failure(description: "POST \(url): the answer is not {\"rewards\": [...]}: " + String(decoding: bytes.prefix(200), as: UTF8.self))
        }
        guard list.count == items.count else {
            throw JSONLineCommand.Failure(description: "POST \(url): \(list.count) rewards for \(items.count) answers")
        }
        return try list.enumerated().map { i, value in
            guard let reward = RewardFunctionService.finite(value) else {
                throw JSONLineCommand.Failure(description: "POST \(url): reward \(i + 1) of \(items.count) is not a finite number: \(value)")
            }
            return reward
        }
    }

    /// The prompt record's fields of `item`.
    static func fields(_ item: RewardItem) -> [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(item.fieldsJSON.utf8)) as? [String: Any]) ?? [:]
    }

    /// A JSON number that a Float holds finitely.
    static func finite(_ value: Any?) -> Float? {
        guard let reward = JSONLineCommand.finiteNumber(value), Float(reward).isFinite else { return nil }
        return Float(reward)
    }

    public func hostActor(on actorSystem: ClusterActorSystem, as name: String) -> any DistributedActor {
        let actor = RewardFunction(service: self, actorSystem: actorSystem)
        actorSystem.publish(actor, as: name)
        return actor
    }
}
