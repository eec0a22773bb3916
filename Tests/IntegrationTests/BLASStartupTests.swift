import Foundation
import LlamaCore
import Testing
import TestKit

/// The rlhf process picks its OpenBLAS kernels at start-up (a real process, its debug log read).
@Suite struct BLASStartupTests {
    @Test func aProcessOnGenericKernelsSwitchesAtStartUp() throws {
        let flags = BLASRuntime.cpuFlags()
        // No AVX2, or an OpenBLAS built for one core (which ignores OPENBLAS_CORETYPE): nothing to switch.
        guard let native = BLASKernelPolicy.nativeCore(cpuFlags: flags), BLASRuntime.configLine.contains("DYNAMIC_ARCH") else { return }
        let switched = try CLITests.rlhf(["checkpoint", "info", Fixtures.model("tiny-mha")],
                                         environment: ["OPENBLAS_CORETYPE": "Prescott", "RLHF_LOG_LEVEL": "debug"])
        #expect(switched.status == 0, "\(switched.stderr)")
        #expect(switched.stderr.contains("OpenBLAS kernels \(native) on a CPU with"), "\(switched.stderr)")
        #expect(switched.stderr.contains("OpenBLAS chose Prescott by itself; switched at start-up"), "\(switched.stderr)")
        // The user's explicit choice is kept.
        let forced = try CLITests.rlhf(["checkpoint", "info", Fixtures.model("tiny-mha")],
                                       environment: ["RLHF_OPENBLAS_CORETYPE": "Prescott", "RLHF_LOG_LEVEL": "debug"])
        #expect(forced.status == 0)
        #expect(forced.stderr.contains("OpenBLAS kernels Prescott on a CPU with"), "\(forced.stderr)")
        // Without the debug level, nothing is said.
        let quiet = try CLITests.rlhf(["checkpoint", "info", Fixtures.model("tiny-mha")], environment: ["OPENBLAS_CORETYPE": "Prescott"])
        #expect(!quiet.stderr.contains("OpenBLAS"))
    }
}
