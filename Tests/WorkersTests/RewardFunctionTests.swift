import Foundation
import Testing
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

    @Test func eachAnswerGoesOutWithItsFieldsAndItsRewardComesBack() throws {
        // Echoes what it was given as the reward: the prompt record's field, the ids and the response length.
        let script = #"while read line; do n=$(printf '%s' "$line" | sed -n 's/.*"response":"\(a*\)".*/\1/p' | wc -c); "#
            + #"w=$(printf '%s' "$line" | sed -n 's/.*"weight":\([0-9]*\).*/\1/p'); echo "{\"reward\": $((n * w))}"; done"#
        let service = try RewardFunctionService(arguments: ["/bin/sh", "-c", script])
        let rewards = try service.reward(RewardFunctionTests.request(40))
        #expect(rewards.values == (0..<40).map { Float(2 * $0) })
        #expect(service.tokensProcessed == 40)
    }

    @Test(arguments: [
        (#"while read line; do echo '{"reward": "high"}'; done"#, "has no finite \"reward\" number"),
        (#"while read line; do echo '{"reward": true}'; done"#, "has no finite \"reward\" number"),
        (#"while read line; do echo '{"score": 1}'; done"#, "has no finite \"reward\" number"),
        (#"read line; echo '{"reward": 1}'; echo 'Traceback: boom' >&2; exit 1"#, "exited with status 1 after 1 of 3 answers; its stderr ends: Traceback: boom"),
        (#"while read line; do echo '{"reward": 1e999}'; done"#, "not a JSON object"),
    ])
    func aBadAnswerFailsTheCall(script: String, message: String) throws {
        let service = try RewardFunctionService(arguments: ["/bin/sh", "-c", script], timeoutSeconds: 5)
        #expect { try service.reward(RewardFunctionTests.request(3)) } throws: { "\($0)".contains(message) }
    }
}
