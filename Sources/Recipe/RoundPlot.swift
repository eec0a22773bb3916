import Foundation

/// The per-round figures of an RLHF run as an SVG chart (RUN_DIR/rounds.svg), in the spirit of LLaMA2's
/// Figure 11: one point per policy (SFT, V1, V2, ...). The left panel holds the rates in percent (win
/// rate against SFT, helpful answers, unsafe answers to safety prompts); the right panel the KL to the
/// reference policy and the mean reward of each round's samples, on their own scale.
public enum RoundPlot {
    /// One plotted series: a name, a colour and one value per policy (nil: no point).
    struct Series {
        var name: String
        var colour: String
        var values: [Double?]
    }

    static let width = 760.0, height = 340.0
    static let panelWidth = 300.0, panelHeight = 220.0, top = 50.0
    static let leftPanelX = 60.0, rightPanelX = 430.0

    /// The chart of `policies` (the SFT policy first, then the rounds in order).
    public static func svg(_ policies: [RLHFPipeline.Figures]) -> String {
        let names = policies.map(\.name)
        let rates = [
            Series(name: "win rate vs SFT", colour: "#1f77b4", values: policies.map { 100 * $0.winRateVsSFT }),
            Series(name: "helpful answers", colour: "#2ca02c", values: policies.map { 100 * $0.helpfulRate }),
            Series(name: "unsafe answers", colour: "#d62728", values: policies.map { 100 * $0.unsafeRate }),
        ]
        // The SFT line has no sampled round: no reward of its own.
        let signals = [
            Series(name: "KL to the reference", colour: "#9467bd", values: policies.map(\.kl)),
            Series(name: "reward mean", colour: "#ff7f0e", values: policies.enumerated().map { i, f in i == 0 ? nil : f.rewardMean }),
        ]
        var out = """
        <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height))" viewBox="0 0 \(Int(width)) \(Int(height))" font-family="sans-serif" font-size="11">
        <rect width="100%" height="100%" fill="white"/>
        <text x="\(Int(width / 2))" y="20" text-anchor="middle" font-size="14">RLHF rounds against the SFT policy</text>

        """
        out += panel(x: leftPanelX, title: "percent", names: names, series: rates, range: (0, 100))
        let values = signals.flatMap { $0.values.compactMap { $0 } }
        let low = min(0, values.min() ?? 0), high = max(values.max() ?? 1, low + 1e-6)
        out += panel(x: rightPanelX, title: "KL (nats) and reward", names: names, series: signals, range: (low, high + 0.05 * (high - low)))
        out += "</svg>\n"
        return out
    }

    /// One panel: axes with ticks, a polyline and points per series, and a legend below.
    static func panel(x: Double, title: String, names: [String], series: [Series], range: (Double, Double)) -> String {
        let bottom = top + panelHeight
        let span = range.1 - range.0
        func px(_ i: Int) -> Double { names.count <= 1 ? x + panelWidth / 2 : x + panelWidth * Double(i) / Double(names.count - 1) }
        func py(_ v: Double) -> Double { bottom - panelHeight * (v - range.0) / span }
        var out = "<g class=\"panel\" data-title=\"\(escape(title))\">\n"
        out += "<text x=\"\(f(x))\" y=\"\(f(top - 10))\">\(escape(title))</text>\n"
        out += "<line x1=\"\(f(x))\" y1=\"\(f(top))\" x2=\"\(f(x))\" y2=\"\(f(bottom))\" stroke=\"black\"/>\n"
        out += "<line x1=\"\(f(x))\" y1=\"\(f(bottom))\" x2=\"\(f(x + panelWidth))\" y2=\"\(f(bottom))\" stroke=\"black\"/>\n"
        for k in 0...4 {
            let v = range.0 + span * Double(k) / 4
            out += "<line x1=\"\(f(x - 4))\" y1=\"\(f(py(v)))\" x2=\"\(f(x + panelWidth))\" y2=\"\(f(py(v)))\" stroke=\"#dddddd\"/>\n"
            out += "<text x=\"\(f(x - 6))\" y=\"\(f(py(v) + 4))\" text-anchor=\"end\">\(String(format: span >= 10 ? "%.0f" : "%.2f", v))</text>\n"
        }
        for (i, name) in names.enumerated() {
            out += "<text x=\"\(f(px(i)))\" y=\"\(f(bottom + 16))\" text-anchor=\"middle\">\(escape(name))</text>\n"
        }
        for (k, s) in series.enumerated() {
            let points = s.values.enumerated().compactMap { i, v in v.map { (px(i), py($0)) } }
            out += "<polyline class=\"series\" data-name=\"\(escape(s.name))\" fill=\"none\" stroke=\"\(s.colour)\" stroke-width=\"2\" points=\""
                + points.map { "\(f($0.0)),\(f($0.1))" }.joined(separator: " ") + "\"/>\n"
            for (i, v) in s.values.enumerated() {
                guard let v else { continue }
                out += "<circle cx=\"\(f(px(i)))\" cy=\"\(f(py(v)))\" r=\"3\" fill=\"\(s.colour)\"><title>\(escape(s.name)) \(escape(names[i])): "
                    + String(format: "%.3f", v) + "</title></circle>\n"
            }
            let ly = bottom + 34 + 14 * Double(k)
            out += "<rect x=\"\(f(x))\" y=\"\(f(ly - 8))\" width=\"10\" height=\"10\" fill=\"\(s.colour)\"/>"
                + "<text x=\"\(f(x + 14))\" y=\"\(f(ly + 1))\">\(escape(s.name))</text>\n"
        }
        return out + "</g>\n"
    }

    static func f(_ v: Double) -> String { String(format: "%.1f", v) }

    static func escape(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
    }
}
