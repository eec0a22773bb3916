import ClusterRuntime
import Foundation
import Testing
import Transport

/// Settings are Codable values: a coordinator's and a worker's survive JSON, CURVE keys included; the
/// run's journal is not a setting and does not travel.
@Suite struct SettingsTests {
    @Test func coordinatorAndWorkerSettingsRoundTripThroughJSON() throws {
        var coordinator = Coordinator.Settings(bind: "tcp://0.0.0.0:5555")
        coordinator.membership.heartbeatIntervalMilliseconds = 250
        coordinator.metricsBind = "tcp://0.0.0.0:9555"
        coordinator.curve = CurveServerKeys(secretKey: "secret", clients: ["a", "b"])
        coordinator.runID = "run-1"
        coordinator.recoveredResults = [7: [Data([1, 2])]]
        let back = try JSONDecoder().decode(Coordinator.Settings.self, from: JSONEncoder().encode(coordinator))
        #expect(back.bind == coordinator.bind && back.membership == coordinator.membership && back.metricsBind == coordinator.metricsBind)
        #expect(back.curve == coordinator.curve && back.runID == "run-1" && back.maxFrameBytes == coordinator.maxFrameBytes)
        #expect(back.recoveredResults.isEmpty && back.journal == nil)

        var worker = WorkerDaemon.Settings(role: .safetyModel, workerID: "safety-model-here-0", coordinator: "tcp://10.0.0.1:5555")
        worker.curve = .client(serverKey: "s", publicKey: "p", secretKey: "k")
        worker.runID = "run-1"
        worker.link.orphanTimeoutMilliseconds = 60_000
        let again = try JSONDecoder().decode(WorkerDaemon.Settings.self, from: JSONEncoder().encode(worker))
        #expect(again.role == .safetyModel && again.workerID == worker.workerID && again.coordinator == worker.coordinator)
        #expect(again.curve == worker.curve && again.runID == "run-1" && again.link == worker.link)
    }
}
