// `distill report` on run directories written here (config.yaml and metrics.jsonl): grouping by experiment,
// mean ± std at the last and best epoch, Markdown and JSON output, the SVG plot, and errors that name the file.
// Also `distill --version`.
import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import TestSupport
import Training
import XCTest

final class ReportTests: XCTestCase {
    var root = ""

    override func setUpWithError() throws {
        try requirePrerequisites(.binary)
        root = NSTemporaryDirectory() + "distill-report-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
    }

    override func tearDown() { try? FileManager.default.removeItem(atPath: root) }

    /// A run directory of `method` with two resnet8 peers and the given test top-1 per epoch.
    func makeRun(_ name: String, method: String, seed: UInt64, options: [String] = [], top1: [[Float]], teacher: [Float]? = nil) throws -> String {
        var c = try TrainConfig.parse("models: [resnet8, resnet8]\nmethod:\n  name: \(method)\n", source: "test", overrides: options)
        c.seed = seed
        let dir = root + "/" + name
        c.output = dir
        let run = RunDirectory(dir)
        try run.create(config: c)
        for (e, values) in top1.enumerated() {
            var m = EpochMetrics()
            m.epoch = e + 1
            m.testTop1 = values
            m.terms = ["ce": Float(3 - e)]
            if let t = teacher { m.teacher = "ensemble"; m.teacherTestTop1 = t[e] }
            try run.appendMetrics(try jsonLine(m))
        }
        return dir
    }

    func testGroupsSeedsAndSummarises() throws {
        let a0 = try makeRun("ind-0", method: "independent", seed: 0, top1: [[0.5, 0.4], [0.7, 0.6], [0.6, 0.8]])
        let a1 = try makeRun("ind-1", method: "independent", seed: 1, top1: [[0.5, 0.4], [0.9, 0.6], [0.8, 0.6]])
        let b0 = try makeRun("dml-0", method: "dml", seed: 0, top1: [[0.5, 0.5], [0.6, 0.6]], teacher: [0.55, 0.65])
        let b1 = try makeRun("dml-t3-0", method: "dml", seed: 0, options: ["method.temperature=3"], top1: [[0.5, 0.5], [0.6, 0.6]], teacher: [0.5, 0.7])
        let c0 = try makeRun("ind-lr-0", method: "independent", seed: 0, options: ["optimizer.lr=0.05"], top1: [[0.5, 0.4]])
        let r = runProcess(distillBinary, ["report", a0, b0, a1, b1, c0, "--json"])
        XCTAssertEqual(r.status, 0, r.output)
        let json = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(r.output.utf8)) as? [String: Any])
        let groups = try XCTUnwrap(json["groups"] as? [[String: Any]])
        XCTAssertEqual(groups.map { $0["label"] as? String },
                       ["independent optimizer.lr=0.1", "dml temperature=1", "dml temperature=3", "independent optimizer.lr=0.05"],
                       "groups of a method are told apart by the method keys, else by the other keys they set differently")
        XCTAssertEqual(groups[0]["runs"] as? [String], [a0, a1])
        XCTAssertEqual(groups[0]["names"] as? [String], ["peer 0 (resnet8)", "peer 1 (resnet8)", "mean of peers"])
        XCTAssertEqual(groups[1]["names"] as? [String], ["peer 0 (resnet8)", "peer 1 (resnet8)", "mean of peers", "ensemble"])
        let last = try XCTUnwrap(groups[0]["last"] as? [String: [String: Double]])
        let best = try XCTUnwrap(groups[0]["best"] as? [String: [String: Double]])
        // peer 0: last 0.6 and 0.8 (mean 0.7, std 0.1414), best 0.7 (epoch 2) and 0.9 (epoch 2).
        XCTAssertEqual(last["peer 0 (resnet8)"]!["mean"]!, 0.7, accuracy: 1e-6)
        XCTAssertEqual(last["peer 0 (resnet8)"]!["std"]!, 0.02.squareRoot(), accuracy: 1e-6)
        XCTAssertEqual(best["peer 0 (resnet8)"]!["mean"]!, 0.8, accuracy: 1e-6)
        // mean of peers: epochs 0.45, 0.65, 0.7 and 0.45, 0.75, 0.7: last 0.7 ± 0, best 0.7 and 0.75.
        XCTAssertEqual(last["mean of peers"]!["std"]!, 0, accuracy: 1e-6)
        XCTAssertEqual(best["mean of peers"]!["mean"]!, 0.725, accuracy: 1e-6)
        let perRun = try XCTUnwrap(groups[0]["per_run"] as? [[String: [String: Any]]])
        XCTAssertEqual(perRun[1]["peer 1 (resnet8)"]?["best_epoch"] as? Int, 2)  // ties go to the earlier epoch

        let md = runProcess(distillBinary, ["report", a0, a1, "--markdown"])
        XCTAssertEqual(md.status, 0, md.output)
        XCTAssertTrue(md.output.contains("| `independent` | peer 0 (resnet8) | 2 | 70.00 ± 14.14 | 80.00 ± 14.14 | 2, 2 |"), md.output)
        // Each method's official evaluation protocol beside ours (independent has none).
        let withDML = runProcess(distillBinary, ["report", a0, b0, "--markdown"])
        XCTAssertTrue(withDML.output.contains("`dml`'s official evaluation: each peer's top-1"), withDML.output)
        XCTAssertFalse(withDML.output.contains("`independent`'s official evaluation"), withDML.output)

        let svg = root + "/curves.svg"
        let plot = runProcess(distillBinary, ["report", a0, a1, b0, "--plot", svg])
        XCTAssertEqual(plot.status, 0, plot.output)
        let text = try String(contentsOfFile: svg, encoding: .utf8)
        XCTAssertNil(XMLDocumentCheck(text).error, "not well-formed XML")
        // Accuracy: 3 + 4 curves; loss terms: one per group.
        XCTAssertEqual(text.components(separatedBy: "<polyline").count - 1, 7 + 2)
        XCTAssertTrue(text.contains("independent: peer 0 (resnet8)") && text.contains("dml: ensemble") && text.contains(">epoch<"), text)
    }

    func testErrorsNameTheFile() throws {
        let missing = runProcess(distillBinary, ["report", root + "/nowhere"])
        XCTAssertEqual(missing.status, 2)
        XCTAssertTrue(missing.output.contains(root + "/nowhere/config.yaml"), missing.output)
        let run = try makeRun("bad", method: "independent", seed: 0, top1: [[0.5, 0.5]])
        let good = try String(contentsOfFile: run + "/metrics.jsonl", encoding: .utf8)
        try Data((good + "not json\n").utf8).write(to: URL(fileURLWithPath: run + "/metrics.jsonl"))
        let bad = runProcess(distillBinary, ["report", run])
        XCTAssertEqual(bad.status, 2)
        XCTAssertTrue(bad.output.contains(run + "/metrics.jsonl line 2"), bad.output)
        let empty = try makeRun("empty", method: "independent", seed: 0, top1: [])
        let none = runProcess(distillBinary, ["report", empty, "--split", "validation"])
        XCTAssertEqual(none.status, 2)
        XCTAssertTrue(none.output.contains("no epoch evaluated on the validation split"), none.output)
        let both = runProcess(distillBinary, ["report", empty, "--json", "--markdown"])
        XCTAssertNotEqual(both.status, 0)
        let notSVG = runProcess(distillBinary, ["report", empty, "--plot", root + "/x.png"])
        XCTAssertNotEqual(notSVG.status, 0)
        XCTAssertTrue(notSVG.output.contains(".svg"), notSVG.output)
    }

    func testVersion() {
        let r = runProcess(distillBinary, ["--version"])
        XCTAssertEqual(r.status, 0)
        XCTAssertTrue(r.output.hasPrefix("swift-distill "), r.output)
    }
}

/// Parses `text` as XML; `error` is nil when it is well formed.
struct XMLDocumentCheck {
    let error: String?
    init(_ text: String) {
        let parser = XMLParser(data: Data(text.utf8))
        error = parser.parse() ? nil : (parser.parserError.map { "\($0)" } ?? "parse failed")
    }
}
