// `distill report`: finished (or running) runs summarised from their metrics.jsonl and config.yaml. Runs are grouped
// by experiment (their configs equal but for seed and output), and each group's models (every peer, the mean of
// the peers, the teacher, a method's further predictions) get their top-1 at the last and at the best epoch, mean
// ± std over the group's runs: as a table, a Markdown table (the README's), JSON, and curves in an SVG.
import ArgumentParser
import Collectives
import Distillation
import Foundation
import Training

struct Report: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Summarises runs: last- and best-epoch top-1 of every peer, the peers' mean and the teacher, mean ± std over seeds; curves as SVG.",
        discussion: """
        Examples:
          distill report runs/dml-0 runs/dml-1 runs/dml-2
          distill report results/pairs-15epochs-val/* --markdown
          distill report runs/css-* --split validation --json
          distill report runs/dml-* runs/independent-* --plot curves.svg
        Runs are grouped by experiment: runs whose config.yaml differ only in seed and output are one group (the
        seeds of one experiment), labelled by method and by what tells groups of one method apart. Best is the
        highest top-1 over the evaluated epochs, with its epoch; the official codes of most online methods report
        it, the last epoch is what a run delivers. Standard deviations are over a group's runs (n − 1 in the
        denominator). --plot draws, per group, the mean over its runs of each model's top-1 per evaluated epoch and
        of each loss term per epoch.
        """)

    @Argument(help: "Run directories (each with config.yaml and metrics.jsonl).")
    var runs: [String]

    @OptionGroup var format: OutputFormat

    @Flag(help: "Print the table as Markdown (the README's format).")
    var markdown = false

    @Option(help: ArgumentHelp("Also write the curves to this SVG file.", valueName: "file.svg"))
    var plot: String?

    enum Split: String, ExpressibleByArgument, CaseIterable { case test, validation }

    @Option(help: ArgumentHelp("The split to summarise: test, or validation (runs with dataset.validation).", valueName: "split"))
    var split = Split.test

    /// One model's figures in one run.
    struct Figures: Encodable { let last: Float; let best: Float; let bestEpoch: Int
        enum CodingKeys: String, CodingKey { case last, best, bestEpoch = "best_epoch" } }

    /// Mean and standard deviation over runs.
    struct Spread: Encodable { let mean: Double; let std: Double; let n: Int }

    /// One run as read from its directory.
    struct Run {
        let dir: String, config: TrainConfig, lines: [EpochMetrics]
        /// Each model's top-1 per evaluated epoch on the split, in display order.
        let series: [(name: String, points: [(epoch: Int, value: Float)])]
    }

    /// Runs of one experiment.
    struct Group {
        var label: String, runs: [Run]
        var names: [String] { runs[0].series.map(\.name) }
    }

    struct Output: Encodable {
        let split: String
        let groups: [GroupOutput]
    }
    struct GroupOutput: Encodable {
        let label: String, method: String, runs: [String], names: [String]
        let perRun: [[String: Figures]], last: [String: Spread], best: [String: Spread]
        enum CodingKeys: String, CodingKey { case label, method, runs, names, last, best, perRun = "per_run" }
    }

    func validate() throws {
        if format.json && markdown { throw ValidationError("give --json or --markdown, not both") }
        if let p = plot, !p.hasSuffix(".svg") { throw ValidationError("--plot: expected a file name ending in .svg, got '\(p)'") }
    }

    func run() throws {
        let groups = try group(try runs.map(read))
        let outputs = groups.map(summarise)
        if let path = plot { try writePlot(groups, to: path) }
        if format.json { try printJSON(Output(split: split.rawValue, groups: outputs)); return }
        func pct(_ s: Spread) -> String { String(format: "%.2f ± %.2f", 100 * s.mean, 100 * s.std) }
        if markdown {
            print("| method | model | runs | \(split.rawValue) top-1, last epoch | best epoch | best at epochs |")
            print("| --- | --- | --- | --- | --- | --- |")
            for g in outputs {
                for (i, n) in g.names.enumerated() {
                    let epochs = g.perRun.map { String($0[n]!.bestEpoch) }.joined(separator: ", ")
                    print("| \(i == 0 ? "`\(g.label)`" : "") | \(n) | \(g.runs.count) | \(pct(g.last[n]!)) | \(pct(g.best[n]!)) | \(epochs) |")
                }
            }
            printProtocols(outputs.map(\.method))
            return
        }
        for g in outputs {
            print("\(g.label): \(split.rawValue) top-1 over \(g.runs.count) run(s): " + g.runs.joined(separator: ", "))
            print("  " + "model".padding(toLength: 26, withPad: " ", startingAt: 0) + "last epoch       best epoch       best at epochs")
            for n in g.names {
                let epochs = g.perRun.map { String($0[n]!.bestEpoch) }.joined(separator: ", ")
                print("  " + n.padding(toLength: 26, withPad: " ", startingAt: 0) + pct(g.last[n]!).padding(toLength: 17, withPad: " ", startingAt: 0)
                      + pct(g.best[n]!).padding(toLength: 17, withPad: " ", startingAt: 0) + epochs)
            }
        }
        printProtocols(outputs.map(\.method))
    }

    /// Beside ours (every head, last and best epoch): how each method's official code evaluates.
    func printProtocols(_ methods: [String]) {
        var seen = Set<String>()
        for m in methods where seen.insert(m).inserted {
            guard let e = MethodRegistry.spec(m)?.officialEvaluation else { continue }
            print("\n`\(m)`'s official evaluation: \(e); here every head at the last and at the best evaluated epoch.", terminator: "")
        }
        if !seen.isEmpty { print() }
    }

    /// Fails the command with a message naming the file.
    func fail(_ message: String) -> ExitCode {
        printError("error: " + message)
        return ExitCode(2)
    }

    func read(_ dir: String) throws -> Run {
        let files = RunDirectory(dir)
        let config: TrainConfig
        do { config = try TrainConfig.load(files.config) } catch let e as ConfigError {
            throw fail("\(e.message) (is \(dir) a run directory?)")
        }
        guard let text = try? String(contentsOfFile: files.metrics, encoding: .utf8) else {
            throw fail("\(files.metrics): cannot read it (is \(dir) a run directory?)")
        }
        var lines: [EpochMetrics] = []
        for (i, line) in text.split(separator: "\n").enumerated() {
            do { lines.append(try JSONDecoder().decode(EpochMetrics.self, from: Data(line.utf8))) } catch {
                throw fail("\(files.metrics) line \(i + 1): not a metrics line: \(error)")
            }
        }
        let onTest = split == .test
        let peers = (0..<config.models.count).map { "peer \($0) (\(config.methodSpec.peerModelName(config.models, $0)))" }
        var series: [String: [(Int, Float)]] = [:], order: [String] = []
        func add(_ name: String, _ epoch: Int, _ v: Float) {
            if series[name] == nil { order.append(name) }
            series[name, default: []].append((epoch, v))
        }
        for m in lines {
            guard let top1 = onTest ? m.testTop1 : m.valTop1 else { continue }
            guard top1.count == peers.count else {
                throw fail("\(files.metrics) epoch \(m.epoch): \(top1.count) peers' top-1, the config has \(peers.count) models")
            }
            for (p, v) in top1.enumerated() { add(peers[p], m.epoch, v) }
            if top1.count > 1 { add("mean of peers", m.epoch, top1.reduce(0, +) / Float(top1.count)) }
            if let name = m.teacher, let t = onTest ? m.teacherTestTop1 : m.teacherValTop1 { add(name, m.epoch, t) }
            for (name, v) in ((onTest ? m.extraTestTop1 : m.extraValTop1) ?? [:]).sorted(by: { $0.key < $1.key }) { add(name, m.epoch, v) }
        }
        guard !order.isEmpty else {
            throw fail("\(files.metrics): no epoch evaluated on the \(split.rawValue) split yet" + (onTest ? "" : " (was dataset.validation set?)"))
        }
        return Run(dir: dir, config: config, lines: lines, series: order.map { n in (n, series[n]!.map { (epoch: $0.0, value: $0.1) }) })
    }

    /// Runs grouped by experiment (config equal but for seed and output), in the order given, each labelled.
    func group(_ all: [Run]) throws -> [Group] {
        func key(_ c: TrainConfig) -> String { var c = c; c.seed = 0; c.output = ""; return c.yaml }
        var groups: [Group] = [], keys: [String] = []
        for r in all {
            let k = key(r.config)
            if let i = keys.firstIndex(of: k) {
                guard groups[i].names == r.series.map(\.name) else {
                    throw fail("\(r.dir) reports \(r.series.map(\.name).joined(separator: ", ")), \(groups[i].runs[0].dir) of the same experiment \(groups[i].names.joined(separator: ", ")) (unfinished runs?)")
                }
                groups[i].runs.append(r)
            } else {
                keys.append(k); groups.append(Group(label: r.config.method, runs: [r]))
            }
        }
        // Groups of one method are told apart by their method keys, their models and any other key they set
        // differently (optimizer.lr), else by their first run's directory.
        for method in Set(groups.map(\.label)) {
            let same = groups.indices.filter { groups[$0].label == method }
            guard same.count > 1 else { continue }
            let configs = same.map { groups[$0].runs[0].config }
            let optionKeys = Set(configs.flatMap { $0.methodOptions.values.keys }).sorted()
            for (i, c) in zip(same, configs) {
                var parts = optionKeys.filter { k in Set(configs.map { "\($0.methodOptions.values[k].map { "\($0)" } ?? "")" }).count > 1 }
                    .map { "\($0)=\(c.methodOptions.values[$0].map(describe) ?? "—")" }
                if Set(configs.map(\.models)).count > 1 { parts.append("[" + c.models.joined(separator: ", ") + "]") }
                let fields = configs.map { Dictionary($0.fieldValues, uniquingKeysWith: { a, _ in a }) }
                for (path, value) in c.fieldValues where !["seed", "output", "models"].contains(path)
                    && Set(fields.map { $0[path] ?? "" }).count > 1 {
                    parts.append("\(path)=\(value)")
                }
                if parts.isEmpty { parts.append((groups[i].runs[0].dir as NSString).lastPathComponent) }
                groups[i].label = method + " " + parts.joined(separator: " ")
            }
        }
        return groups
    }

    /// A method key's value in a group label: whole numbers without a decimal point ("temperature=3").
    func describe(_ v: OptionValue) -> String {
        if case let .number(x) = v, x == x.rounded(), abs(x) < 1e9 { return "\(Int(x))" }
        return v.description
    }

    func summarise(_ g: Group) -> GroupOutput {
        let perRun = g.runs.map { r in
            Dictionary(uniqueKeysWithValues: r.series.map { s -> (String, Figures) in
                let best = s.points.max { $0.value < $1.value || ($0.value == $1.value && $0.epoch > $1.epoch) }!
                return (s.name, Figures(last: s.points.last!.value, best: best.value, bestEpoch: best.epoch))
            })
        }
        func spread(_ values: [Float]) -> Spread {
            let n = values.count, mean = values.reduce(0.0) { $0 + Double($1) } / Double(n)
            let v = n > 1 ? values.reduce(0.0) { $0 + (Double($1) - mean) * (Double($1) - mean) } / Double(n - 1) : 0
            return Spread(mean: mean, std: v.squareRoot(), n: n)
        }
        let names = g.names
        return GroupOutput(label: g.label, method: g.runs[0].config.method, runs: g.runs.map(\.dir), names: names, perRun: perRun,
                           last: Dictionary(uniqueKeysWithValues: names.map { n in (n, spread(perRun.map { $0[n]!.last })) }),
                           best: Dictionary(uniqueKeysWithValues: names.map { n in (n, spread(perRun.map { $0[n]!.best })) }))
    }

    /// Per group, the mean over its runs of each model's top-1 and of each loss term, per epoch.
    func writePlot(_ groups: [Group], to path: String) throws {
        func mean(_ series: [[(epoch: Int, value: Double)]]) -> [(Double, Double)] {
            var sum: [Int: (Double, Int)] = [:]
            for s in series { for p in s { let o = sum[p.epoch] ?? (0, 0); sum[p.epoch] = (o.0 + p.value, o.1 + 1) } }
            return sum.keys.sorted().map { (Double($0), sum[$0]!.0 / Double(sum[$0]!.1)) }
        }
        let prefix = { (g: Group) in groups.count > 1 ? g.label + ": " : "" }
        var accuracy: [Curve] = [], losses: [Curve] = []
        for g in groups {
            for name in g.names {
                let runs = g.runs.map { r in r.series.first { $0.name == name }!.points.map { (epoch: $0.epoch, value: 100 * Double($0.value)) } }
                accuracy.append(Curve(label: prefix(g) + name, points: mean(runs)))
            }
            let terms = Set(g.runs.flatMap { $0.lines.flatMap { $0.terms.keys } }).sorted()
            for t in terms {
                let runs = g.runs.map { r in r.lines.compactMap { m in m.terms[t].map { (epoch: m.epoch, value: Double($0)) } } }
                losses.append(Curve(label: prefix(g) + t, points: mean(runs)))
            }
        }
        let svg = svgChart([Panel(title: "\(split.rawValue) top-1 (mean over \(groups.map { String($0.runs.count) }.joined(separator: "/")) run(s))",
                                  xLabel: "epoch", yLabel: "top-1 (%)", curves: accuracy),
                            Panel(title: "loss terms (training, epoch mean)", xLabel: "epoch", yLabel: "loss", curves: losses)])
        do { try Data(svg.utf8).write(to: URL(fileURLWithPath: path), options: .atomic) } catch {
            throw fail("\(path): cannot write the plot: \(error.localizedDescription)")
        }
    }
}
