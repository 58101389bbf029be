// Line charts as SVG for `distill report --plot`: panels side by side, each with labelled axes, ticks at round
// values, one colour per curve (a 10-colour palette, then dashed repeats) and a legend under the panel.
import Foundation

struct Curve { let label: String; let points: [(Double, Double)] }
struct Panel { let title: String, xLabel: String, yLabel: String; let curves: [Curve] }

/// Tableau's 10 categorical colours.
private let palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]

/// About `count` round tick values covering [lo, hi].
func niceTicks(_ lo: Double, _ hi: Double, count: Int = 6) -> [Double] {
    guard hi > lo else { return [lo] }
    let raw = (hi - lo) / Double(max(count - 1, 1)), magnitude = pow(10, floor(log10(raw)))
    let step = ([1.0, 2, 2.5, 5, 10].first { $0 * magnitude >= raw } ?? 10) * magnitude
    var ticks: [Double] = [], t = ceil(lo / step - 1e-9) * step
    while t <= hi + step * 1e-9 { ticks.append(abs(t) < step * 1e-9 ? 0 : t); t += step }
    return ticks
}

private func escape(_ s: String) -> String {
    s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
}

private func label(_ v: Double) -> String {
    v == v.rounded() && abs(v) < 1e6 ? String(Int(v)) : String(format: abs(v) < 0.01 ? "%.1e" : "%.3g", v)
}

/// The SVG document of `panels` side by side.
func svgChart(_ panels: [Panel]) -> String {
    let panelWidth = 520.0, plotHeight = 300.0, left = 70.0, right = 20.0, top = 40.0, legendRow = 18.0
    let legendRows = panels.map { $0.curves.count }.max() ?? 0
    let height = top + plotHeight + 50 + Double(legendRows) * legendRow + 10
    let width = panelWidth * Double(panels.count)
    var s = """
    <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height))" viewBox="0 0 \(Int(width)) \(Int(height))" font-family="sans-serif" font-size="12">
    <rect width="100%" height="100%" fill="white"/>

    """
    for (i, panel) in panels.enumerated() {
        let x0 = Double(i) * panelWidth + left, x1 = Double(i + 1) * panelWidth - right, y0 = top, y1 = top + plotHeight
        let all = panel.curves.flatMap(\.points).filter { $0.0.isFinite && $0.1.isFinite }
        s += "<text x=\"\((x0 + x1) / 2)\" y=\"22\" text-anchor=\"middle\" font-size=\"14\">\(escape(panel.title))</text>\n"
        guard let xmin = all.map(\.0).min(), let xmax = all.map(\.0).max(), var ymin = all.map(\.1).min(), var ymax = all.map(\.1).max() else {
            s += "<text x=\"\((x0 + x1) / 2)\" y=\"\((y0 + y1) / 2)\" text-anchor=\"middle\">no data</text>\n"
            continue
        }
        if ymax - ymin < 1e-9 { ymin -= 0.5; ymax += 0.5 }
        let pad = (ymax - ymin) * 0.05
        ymin -= pad; ymax += pad
        let xr = xmax > xmin ? (xmin, xmax) : (xmin - 1, xmax + 1)
        func px(_ x: Double) -> Double { x0 + (x - xr.0) / (xr.1 - xr.0) * (x1 - x0) }
        func py(_ y: Double) -> Double { y1 - (y - ymin) / (ymax - ymin) * (y1 - y0) }
        s += "<rect x=\"\(x0)\" y=\"\(y0)\" width=\"\(x1 - x0)\" height=\"\(plotHeight)\" fill=\"none\" stroke=\"#444\"/>\n"
        for t in niceTicks(ymin, ymax) {
            s += "<line x1=\"\(x0)\" y1=\"\(py(t))\" x2=\"\(x1)\" y2=\"\(py(t))\" stroke=\"#ddd\"/>"
            s += "<text x=\"\(x0 - 6)\" y=\"\(py(t) + 4)\" text-anchor=\"end\">\(label(t))</text>\n"
        }
        let xticks = niceTicks(xr.0, xr.1).filter { xmax - xmin < 1e-9 || $0 == $0.rounded() }
        for t in xticks {
            s += "<line x1=\"\(px(t))\" y1=\"\(y1)\" x2=\"\(px(t))\" y2=\"\(y1 + 5)\" stroke=\"#444\"/>"
            s += "<text x=\"\(px(t))\" y=\"\(y1 + 18)\" text-anchor=\"middle\">\(label(t))</text>\n"
        }
        s += "<text x=\"\((x0 + x1) / 2)\" y=\"\(y1 + 36)\" text-anchor=\"middle\">\(escape(panel.xLabel))</text>\n"
        s += "<text transform=\"translate(\(x0 - 50) \((y0 + y1) / 2)) rotate(-90)\" text-anchor=\"middle\">\(escape(panel.yLabel))</text>\n"
        for (k, c) in panel.curves.enumerated() {
            let colour = palette[k % palette.count], dash = k >= palette.count ? " stroke-dasharray=\"6 3\"" : ""
            let pts = c.points.filter { $0.0.isFinite && $0.1.isFinite }
            let path = pts.map { String(format: "%.1f,%.1f", px($0.0), py($0.1)) }.joined(separator: " ")
            s += "<polyline points=\"\(path)\" fill=\"none\" stroke=\"\(colour)\" stroke-width=\"2\"\(dash)/>\n"
            if pts.count == 1 { s += "<circle cx=\"\(px(pts[0].0))\" cy=\"\(py(pts[0].1))\" r=\"3\" fill=\"\(colour)\"/>\n" }
            let ly = y1 + 56 + Double(k) * legendRow
            s += "<line x1=\"\(x0)\" y1=\"\(ly - 4)\" x2=\"\(x0 + 24)\" y2=\"\(ly - 4)\" stroke=\"\(colour)\" stroke-width=\"2\"\(dash)/>"
            s += "<text x=\"\(x0 + 30)\" y=\"\(ly)\">\(escape(c.label))</text>\n"
        }
    }
    return s + "</svg>\n"
}
