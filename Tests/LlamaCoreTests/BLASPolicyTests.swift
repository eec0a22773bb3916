import Foundation
import LlamaCore
import Testing

@Suite struct BLASPolicyTests {
    let avx512: Set<String> = ["sse3", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512cd"]
    let avx2: Set<String> = ["sse3", "avx", "avx2", "fma"]

    @Test func genericCoreOnAnAVX512CPUSwitchesToSkylakeX() {
        #expect(BLASKernelPolicy.decide(current: "Prescott", cpuFlags: avx512, environment: [:]) == .switchTo("SkylakeX"))
        #expect(BLASKernelPolicy.decide(current: "Haswell", cpuFlags: avx512, environment: [:]) == .switchTo("SkylakeX"))
        // With bfloat16 instructions, the core that also has OpenBLAS's bfloat16 kernels.
        #expect(BLASKernelPolicy.decide(current: "Prescott", cpuFlags: avx512.union(["avx512_bf16"]), environment: [:])
                == .switchTo("Cooperlake"))
    }

    @Test func genericCoreOnAnAVX2CPUSwitchesToHaswell() {
        #expect(BLASKernelPolicy.decide(current: "Prescott", cpuFlags: avx2, environment: [:]) == .switchTo("Haswell"))
        #expect(BLASKernelPolicy.decide(current: "Sandybridge", cpuFlags: avx2, environment: [:]) == .switchTo("Haswell"))
    }

    @Test func matchingOrUnknownCoresAreKept() {
        #expect(BLASKernelPolicy.decide(current: "SkylakeX", cpuFlags: avx512, environment: [:]) == .keep)
        #expect(BLASKernelPolicy.decide(current: "Cooperlake", cpuFlags: avx512, environment: [:]) == .keep)
        #expect(BLASKernelPolicy.decide(current: "Zen", cpuFlags: avx2, environment: [:]) == .keep)
        #expect(BLASKernelPolicy.decide(current: "NEOVERSEN1", cpuFlags: [], environment: [:]) == .keep)
        #expect(BLASKernelPolicy.decide(current: "Prescott", cpuFlags: ["sse3"], environment: [:]) == .keep)
    }

    @Test func theUsersChoiceWinsAndASwitchIsTriedOnce() {
        let forced = [BLASKernelPolicy.overrideVariable: "Prescott"]
        #expect(BLASKernelPolicy.decide(current: "Prescott", cpuFlags: avx512, environment: forced) == .keep)
        #expect(BLASKernelPolicy.decide(current: "SkylakeX", cpuFlags: avx512, environment: forced) == .switchTo("Prescott"))
        // After one re-execution the library still runs a generic core: go on, and say so.
        let again = [BLASKernelPolicy.reexecVariable: "1:Prescott"]
        #expect(BLASKernelPolicy.decide(current: "Prescott", cpuFlags: avx512, environment: again) == .stillWrong(wanted: "SkylakeX"))
        #expect(BLASKernelPolicy.reexecState("2:Prescott")! == (2, "Prescott"))
        #expect(BLASKernelPolicy.reexecState("garbage") == nil)
    }

    @Test func theLoadedKernelsComputeCorrectProducts() {
        #expect(BLASRuntime.verifyProducts())
    }

    /// The real thing: `rlhf` started with OpenBLAS told to load its generic SSE3 kernels re-executes
    /// itself with the kernels of this CPU, and says so in its debug log.
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
