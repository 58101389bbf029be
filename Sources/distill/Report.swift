// `distill report`: the test accuracies of finished runs, read from their metrics.jsonl: each peer's and the
// teacher's top-1 at the last epoch and at its best epoch, and over several runs (seeds) their mean ± std.
import ArgumentParser
import Collectives
import Foundation
import Training

struct Report: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Summarises runs: last-epoch and best-epoch test (or validation) top-1 of every peer and of the teacher, mean ± std over runs.",
        discussion: """
        Examples:
          distill report runs/css-0
          distill report runs/css-0 runs/css-1 runs/css-2 --json
        Runs given together must have the same peers (seeds of one experiment). Best is the highest test top-1 over
        the evaluated epochs, reported with its epoch; the official codes of most online methods report it, the
        last epoch is what a run delivers. Standard deviations are over runs (n − 1 in the denominator).
        """)

    @Argument(help: "Run directories (each with a metrics.jsonl).")
    var runs: [String]

    @Flag(help: "Print one JSON object instead of a table.")
    var json = false

    enum Split: String, ExpressibleByArgument, CaseIterable { case test, validation }

    @Option(help: ArgumentHelp("The split to summarise: test, or validation (runs with dataset.validation).", valueName: "split"))
    var split = Split.test

    /// One model's figures in one run.
    struct Figures: Encodable { let last: Float; let best: Float; let bestEpoch: Int
        enum CodingKeys: String, CodingKey { case last, best, bestEpoch = "best_epoch" } }

    /// Mean and standard deviation over runs.
    struct Spread: Encodable { let mean: Double; let std: Double; let n: Int }

    struct Output: Encodable {
        let runs: [String], names: [String]
        let perRun: [[String: Figures]], last: [String: Spread], best: [String: Spread]
        enum CodingKeys: String, CodingKey { case runs, names, last, best, perRun = "per_run" }
    }

    func run() throws {
        var perRun: [[String: Figures]] = [], names: [String] = []
        let onTest = split == .test
        for dir in runs {
            let path = RunDirectory(dir).metrics
            guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
                printError("error: \(path): cannot read it (is \(dir) a run directory?)")
                throw ExitCode(2)
            }
            var series: [String: [(Int, Float)]] = [:], order: [String] = []
            for (i, line) in text.split(separator: "\n").enumerated() {
                let m: EpochMetrics
                do { m = try JSONDecoder().decode(EpochMetrics.self, from: Data(line.utf8)) } catch {
                    printError("error: \(path) line \(i + 1): not a metrics line: \(error)")
                    throw ExitCode(2)
                }
                var values: [(String, Float)] = ((onTest ? m.testTop1 : m.valTop1) ?? []).enumerated().map { ("peer \($0.offset)", $0.element) }
                if let name = m.teacher, let t = onTest ? m.teacherTestTop1 : m.teacherValTop1 { values.append((name, t)) }
                values += ((onTest ? m.extraTestTop1 : m.extraValTop1) ?? [:]).sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
                for (name, v) in values {
                    if series[name] == nil { order.append(name) }
                    series[name, default: []].append((m.epoch, v))
                }
            }
            guard !order.isEmpty else {
                printError("error: \(path): no epoch evaluated on the \(split.rawValue) split yet" + (onTest ? "" : " (was dataset.validation set?)"))
                throw ExitCode(2)
            }
            if names.isEmpty { names = order } else if names != order {
                printError("error: \(dir) reports \(order.joined(separator: ", ")), the first run \(names.joined(separator: ", ")): give runs of one experiment")
                throw ExitCode(2)
            }
            perRun.append(series.mapValues { s in
                let best = s.max { $0.1 < $1.1 || ($0.1 == $1.1 && $0.0 > $1.0) }!
                return Figures(last: s.last!.1, best: best.1, bestEpoch: best.0)
            })
        }
        func spread(_ values: [Float]) -> Spread {
            let n = values.count, mean = values.reduce(0.0) { $0 + Double($1) } / Double(n)
            let v = n > 1 ? values.reduce(0.0) { $0 + (Double($1) - mean) * (Double($1) - mean) } / Double(n - 1) : 0
            return Spread(mean: mean, std: v.squareRoot(), n: n)
        }
        let last = Dictionary(uniqueKeysWithValues: names.map { n in (n, spread(perRun.map { $0[n]!.last })) })
        let best = Dictionary(uniqueKeysWithValues: names.map { n in (n, spread(perRun.map { $0[n]!.best })) })
        if json { try printJSON(Output(runs: runs, names: names, perRun: perRun, last: last, best: best)); return }
        func pct(_ s: Spread) -> String { String(format: "%.2f ± %.2f", 100 * s.mean, 100 * s.std) }
        print("\(split.rawValue) top-1 over \(runs.count) run(s): " + runs.joined(separator: ", "))
        print("  " + "model".padding(toLength: 22, withPad: " ", startingAt: 0) + "last epoch       best epoch       best at epochs")
        for n in names {
            let epochs = perRun.map { String($0[n]!.bestEpoch) }.joined(separator: ", ")
            print("  " + n.padding(toLength: 22, withPad: " ", startingAt: 0) + pct(last[n]!).padding(toLength: 17, withPad: " ", startingAt: 0)
                  + pct(best[n]!).padding(toLength: 17, withPad: " ", startingAt: 0) + epochs)
        }
    }
}
