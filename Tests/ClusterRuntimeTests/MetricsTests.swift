@testable import ClusterRuntime
import Testing

@Suite struct MetricsTests {
    @Test func prometheusTextAndThroughput() {
        var text = PrometheusText()
        text.family("rlhf_x_total", "counter", "Things.")
        text.sample("rlhf_x_total", ["role": "gen\"erator", "a": "b"], 3)
        text.sample("rlhf_y", [:], 0.25)
        #expect(text.text == "# HELP rlhf_x_total Things.\n# TYPE rlhf_x_total counter\nrlhf_x_total{a=\"b\",role=\"gen\\\"erator\"} 3\nrlhf_y 0.25\n")
        var meter = ThroughputMeter()
        meter.add(500, at: 10_000)
        meter.add(500, at: 12_000)
        #expect(meter.rate(at: 12_000) == 500) // 1000 tokens over 2 s
        #expect(meter.rate(at: 30_000) == 0)
        #expect(meter.total == 1000)
    }
}
