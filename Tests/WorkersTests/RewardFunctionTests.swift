import Foundation
import LlamaCore
import Testing
import TestKit
import Wire
import Workers

/// The reward-function role's compute: a real command spoken to in JSON lines.
@Suite struct RewardFunctionTests {
    static func request(_ count: Int) -> RewardRequest {
        RewardRequest(items: (0..<count).map { i in
            RewardItem(promptID: UInt64(i / 2), sampleID: UInt64(i % 2), prompt: "Tell me about a fox.", response: String(repeating: "a", count: i),
                       fieldsJSON: #"{"label": "fox", "weight": 2}"#)
        })
    }

    @Test func eachAnswerGoesOutWithItsFieldsAndItsRewardComesBack() async throws {
        // Echoes what it was given as the reward: the prompt record's field, the ids and the response length.
        let script = #"while read line; do n=$(printf '%s' "$line" | sed -n 's/.*"response":"\(a*\)".*/\1/p' | wc -c); "#
            + #"w=$(printf '%s' "$line" | sed -n 's/.*"weight":\([0-9]*\).*/\1/p'); echo "{\"reward\": $((n * w))}"; done"#
        let service = try RewardFunctionService(arguments: ["/bin/sh", "-c", script])
        let rewards = try await service.reward(RewardFunctionTests.request(40))
        #expect(rewards.values == (0..<40).map { Float(2 * $0) })
        #expect(service.tokensProcessed == 40)
    }

    /// Each line carries the prompt's whole conversation as `messages` (TRL's conversational prompts): a system
    /// message and earlier turns, ending with the user turn `prompt` is.
    @Test func eachAnswerGoesOutWithItsPromptsConversation() async throws {
        let script = "import json, sys\nfor line in sys.stdin:\n    r = json.loads(line)\n    m = r['messages']\n"
            + "    ok = m[-1] == {'role': 'user', 'content': r['prompt']}\n"
            + "    print(json.dumps({'reward': 10 * len(m) + (m[0]['role'] == 'system') if ok else -1}), flush=True)\n"
        let service = try RewardFunctionService(arguments: ["python3", "-c", script])
        let conversation = [ChatTemplate.Message(role: .system, content: "Be brief."), ChatTemplate.Message(role: .user, content: "Hi."),
                            ChatTemplate.Message(role: .assistant, content: "Hello."), ChatTemplate.Message(role: .user, content: "A fox?")]
        let request = RewardRequest(items: [
            RewardItem(promptID: 0, sampleID: 0, prompt: "A fox?", response: "Yes.", messages: conversation),
            RewardItem(promptID: 1, sampleID: 0, prompt: "An owl?", response: "No."),
        ])
        let rewards = try await service.reward(try RewardRequest(wirePayload: try request.wirePayload()))
        #expect(rewards.values == [41, 10])
    }

    @Test(arguments: [
        (#"while read line; do echo '{"reward": "high"}'; done"#, "has no finite \"reward\" number"),
        (#"while read line; do echo '{"reward": true}'; done"#, "has no finite \"reward\" number"),
        (#"while read line; do echo '{"score": 1}'; done"#, "has no finite \"reward\" number"),
        (#"read line; echo '{"reward": 1}'; echo 'Traceback: boom' >&2; exit 1"#, "exited with status 1 after 1 of 3 answers; its stderr ends: Traceback: boom"),
        (#"while read line; do echo '{"reward": 1e999}'; done"#, "not a JSON object"),
    ])
    func aBadAnswerFailsTheCall(script: String, message: String) async throws {
        let service = try RewardFunctionService(arguments: ["/bin/sh", "-c", script], timeoutSeconds: 5)
        await #expect { try await service.reward(RewardFunctionTests.request(3)) } throws: { "\($0)".contains(message) }
    }
}

/// The reward-function role behind a real HTTP endpoint (a Python standard-library server) in
/// OpenRLHF's remote reward shape.
@Suite(.serialized) struct RewardEndpointTests {
    /// Answers POST /reward with the labels' lengths plus the responses' (the query less its prompt);
    /// /broken with HTTP 500, /short with one reward too few.
    static let server = """
    import json, sys
    from http.server import BaseHTTPRequestHandler, HTTPServer
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if self.path == "/broken":
                self.send_response(500); self.send_header("Content-Length", "16"); self.end_headers(); self.wfile.write(b"model not loaded"); return
            if self.path == "/gone":
                self.send_response(503); self.end_headers(); self.wfile.write(b"no length"); return
            rewards = [len(label or "") + len(q[len(p):]) for q, p, label in zip(body["query"], body["prompts"], body["labels"])]
            if self.path == "/short":
                rewards = rewards[1:]
            out = json.dumps({"rewards": rewards}).encode()
            self.send_response(200); self.send_header("Content-Type", "application/json"); self.send_header("Content-Length", str(len(out)))
            self.end_headers(); self.wfile.write(out)
        def log_message(self, *args): pass
    server = HTTPServer(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()
    """

    static func start() throws -> (Process, Int) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-c", server]
        let out = Pipe()
        process.standardOutput = out
        try process.run()
        var text = Data()
        while !text.contains(0x0A) {
            let chunk = out.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            text.append(chunk)
        }
        let port = try #require(Int(String(decoding: text, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)))
        return (process, port)
    }

    @Test func rewardsComeFromTheEndpointAndItsErrorsAreNamed() async throws {
        let (server, port) = try RewardEndpointTests.start()
        // SIGKILL: a process spawned from a test's thread may inherit a blocked SIGTERM.
        defer { kill(server.processIdentifier, SIGKILL) }
        let service = try RewardFunctionService(endpoint: "http://127.0.0.1:\(port)/reward", labelKey: "label", timeoutSeconds: 10)
        let request = RewardFunctionTests.request(5)
        // label "fox" (3) plus the response's length.
        #expect(try await service.reward(request).values == (0..<5).map { Float(3 + $0) })
        let broken = try RewardFunctionService(endpoint: "http://127.0.0.1:\(port)/broken", timeoutSeconds: 10)
        await #expect { try await broken.reward(request) } throws: { "\($0)".contains("HTTP 500") && "\($0)".contains("model not loaded") }
        // An error whose body runs to the connection's close: its status at once.
        let gone = try RewardFunctionService(endpoint: "http://127.0.0.1:\(port)/gone", timeoutSeconds: 10)
        await #expect { try await gone.reward(request) } throws: { "\($0)".contains("HTTP 503 Service Unavailable") }
        let short = try RewardFunctionService(endpoint: "http://127.0.0.1:\(port)/short", timeoutSeconds: 10)
        await #expect { try await short.reward(request) } throws: { "\($0)".contains("4 rewards for 5 answers") }
        #expect(throws: (any Error).self) { try RewardFunctionService(endpoint: "ftp://127.0.0.1/x") }
        // Nobody listening: the client retries connecting until the timeout, then fails naming the endpoint.
        let nowhere = try TestKit.freePort()
        let refused = try RewardFunctionService(endpoint: "http://127.0.0.1:\(nowhere)/reward", timeoutSeconds: 1)
        await #expect { try await refused.reward(request) } throws: { "\($0)".contains("POST http://127.0.0.1:\(nowhere)/reward") }
    }
}
