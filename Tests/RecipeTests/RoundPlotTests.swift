import ClusterRuntime
import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
@testable import Recipe
import Testing

/// The per-round chart: well-formed SVG with one point per policy in each series, placed by value.
@Suite struct RoundPlotTests {
    static func figures(_ name: String, win: Double, helpful: Double, unsafe: Double, kl: Double, reward: Double) -> RLHFPipeline.Figures {
        RLHFPipeline.Figures(name: name, winRateVsSFT: win, helpfulness: 0.7, helpfulRate: helpful, unsafeRate: unsafe, rewardMean: reward, kl: kl,
                             gateHitRate: 0.2, tokensPerSecond: 1000, seconds: 30, policyVersion: 1)
    }

    /// The (x, y) points of the series named `name`.
    static func points(_ document: XMLDocument, _ name: String) throws -> [(Double, Double)] {
        let nodes = try document.nodes(forXPath: "//*[local-name()='polyline'][@data-name='\(name)']")
        let element = try #require(nodes.first as? XMLElement)
        let text = try #require((element.attributes ?? []).first { $0.localName == "points" || $0.name == "points" }?.stringValue)
        return text.split(separator: " ").map { pair in
            let xy = pair.split(separator: ",").map { Double($0)! }
            return (xy[0], xy[1])
        }
    }

    @Test func everyPolicyIsAPointPlacedByItsValue() throws {
        let policies = [RoundPlotTests.figures("SFT", win: 0.5, helpful: 0.5, unsafe: 0.55, kl: 0, reward: 0),
                        RoundPlotTests.figures("V1", win: 0.61, helpful: 0.62, unsafe: 0.11, kl: 0.2, reward: 0.4),
                        RoundPlotTests.figures("V2 <&>", win: 0.66, helpful: 0.6, unsafe: 0.0, kl: 0.5, reward: 0.6)]
        let svg = RoundPlot.svg(policies)
        let document = try XMLDocument(xmlString: svg)
        let win = try RoundPlotTests.points(document, "win rate vs SFT")
        #expect(win.count == 3)
        // Left to right by round; a higher rate is higher on the page (a smaller y).
        #expect(win[0].0 < win[1].0 && win[1].0 < win[2].0)
        #expect(win[0].1 > win[1].1 && win[1].1 > win[2].1)
        let unsafe = try RoundPlotTests.points(document, "unsafe answers")
        #expect(unsafe[0].1 < unsafe[1].1 && unsafe[1].1 < unsafe[2].1)
        // 50% sits halfway up the 0-100 panel.
        #expect(abs(win[0].1 - (RoundPlot.top + RoundPlot.panelHeight / 2)) < 0.1)
        // The SFT policy has no sampled round, so no reward point.
        #expect(try RoundPlotTests.points(document, "reward mean").count == 2)
        #expect(svg.contains("V2 &lt;&amp;&gt;"))
    }

    @Test func aRunWithOnlyTheSFTEvaluationStillDraws() throws {
        let svg = RoundPlot.svg([RoundPlotTests.figures("SFT", win: 0.5, helpful: 0.5, unsafe: 0.5, kl: 0, reward: 0)])
        let document = try XMLDocument(xmlString: svg)
        #expect(try RoundPlotTests.points(document, "win rate vs SFT").count == 1)
    }
}
