// `distill eval`: test accuracy of a checkpoint, every peer and the method's teacher.
import ArgumentParser
import Collectives
import Foundation
import Training

struct Eval: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Evaluates a checkpoint on the config's test split: top-1 and top-5 of every peer and of the teacher.",
        discussion: """
        Examples:
          distill eval --config runs/dml/config.yaml --checkpoint runs/dml
          distill eval --config configs/kd.yaml --checkpoint runs/kd/checkpoints/epoch-15 --json
        --checkpoint is a run directory (its last complete checkpoint is used) or a checkpoints/epoch-E directory.
        Runs on one rank or on as many ranks as the run had (launch/run -np R -- eval ...).
        Exit codes: 0 success, 2 a usage or config error, 1 a runtime failure (e.g. a missing or corrupt file).
        """)

    @Option(help: "The experiment config the checkpoint was trained with (the run's config.yaml works).")
    var config: String

    @Option(help: "A run directory or a checkpoints/epoch-E directory.")
    var checkpoint: String

    @OptionGroup var overrides: ConfigOverrides

    @OptionGroup var format: OutputFormat

    /// The `--json` output.
    struct JSONOutput: Encodable {
        let checkpoint: String, models: [String]
        let testTop1: [Float], testTop5: [Float]
        let teacher: String?, teacherTestTop1: Float?, teacherTestTop5: Float?
        let extraTestTop1: [String: Float]?
        enum CodingKeys: String, CodingKey {
            case checkpoint, models, teacher
            case extraTestTop1 = "extra_test_top1"
            case testTop1 = "test_top1", testTop5 = "test_top5", teacherTestTop1 = "teacher_test_top1", teacherTestTop5 = "teacher_test_top5"
        }
    }

    func run() throws {
        let cfg = try overrides.load(config)
        try runOnWorld { comm in
            // The checkpoint is on rank 0's node (Checkpoints.swift): rank 0 resolves the path for every rank.
            let dir = RunDirectory.Checkpoint(path: try decidedOnLeader(comm) { () throws -> String in
                do { return try RunDirectory.checkpoint(at: checkpoint).path } catch let e as ConfigError { throw ConfigError("--checkpoint \(e.message)") }
            })
            let x = try Experiment(config: cfg, comm: comm)
            try x.loadWeights(from: dir)
            let e = try x.evaluate()
            guard comm.rank == 0 else { return }
            let teacher = x.method.teacherName
            if format.json {
                let r = JSONOutput(checkpoint: dir.path, models: cfg.models, testTop1: e.top1, testTop5: e.top5,
                               teacher: teacher, teacherTestTop1: e.teacherTop1, teacherTestTop5: e.teacherTop5,
                               extraTestTop1: e.extraTop1.isEmpty ? nil : e.extraTop1)
                try printJSON(r)
                return
            }
            print("\(dir.path) on \(cfg.dataset) test (\(cfg.testSubset > 0 ? "\(cfg.testSubset) images" : "all images")):")
            for (p, name) in cfg.models.enumerated() {
                print("  peer \(p)  " + name.padding(toLength: 10, withPad: " ", startingAt: 0) + String(format: "  top-1 %6.2f%%  top-5 %6.2f%%", 100 * e.top1[p], 100 * e.top5[p]))
            }
            if let name = teacher, let t1 = e.teacherTop1, let t5 = e.teacherTop5 {
                print("  \(name)" + String(format: "  top-1 %6.2f%%  top-5 %6.2f%%", 100 * t1, 100 * t5))
            }
            for name in e.extraTop1.keys.sorted() { print("  \(name)" + String(format: "  top-1 %6.2f%%", 100 * e.extraTop1[name]!)) }
        }
    }
}
