import Foundation
import LlamaCore
import Testing
import TestKit

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
}
