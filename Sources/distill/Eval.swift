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

    @Option(name: .customLong("set"), help: ArgumentHelp("Override a config value, e.g. --set dataset.test_subset=1000 (repeatable).", valueName: "key.path=value"))
    var overrides: [String] = []

    @Flag(help: "Print one JSON object instead of a table.")
    var json = false

    func run() throws {
        var cfg = try loadConfig(config, overrides: overrides)
        var dir = checkpoint
        let state = dir + "/checkpoints/state.json"
        if let data = FileManager.default.contents(atPath: state),
           let obj = try? JSONSerialization.jsonObject(with: data) as? [String: Any], let epoch = obj["epoch"] as? Int {
            dir += "/checkpoints/epoch-\(epoch)"
        }
        guard FileManager.default.fileExists(atPath: dir + "/peer0.safetensors") else {
            printError("error: --checkpoint \(checkpoint): no peer0.safetensors there (give a run directory or its checkpoints/epoch-E)")
            throw ExitCode(2)
        }
        cfg.output = NSTemporaryDirectory() + "distill-eval-unused"
        try runOnWorld { comm in
            let trainer = try Trainer(config: cfg, comm: comm)
            try trainer.loadWeights(from: dir)
            let e = try trainer.evaluate()
            if comm.rank == 0 {
                if json {
                    func list(_ v: [Float]) -> String { "[" + v.map { String(format: "%.6g", $0) }.joined(separator: ", ") + "]" }
                    var parts = ["\"checkpoint\": \"\(dir)\"", "\"models\": [\(cfg.models.map { "\"\($0)\"" }.joined(separator: ", "))]",
                                 "\"test_top1\": \(list(e.top1))", "\"test_top5\": \(list(e.top5))"]
                    if let name = trainer.method.teacherName, let t1 = e.teacherTop1, let t5 = e.teacherTop5 {
                        parts += ["\"teacher\": \"\(name)\"", String(format: "\"teacher_test_top1\": %.6g", t1), String(format: "\"teacher_test_top5\": %.6g", t5)]
                    }
                    print("{" + parts.joined(separator: ", ") + "}")
                } else {
                    print("\(dir) on \(cfg.dataset) test (\(cfg.testSubset > 0 ? "\(cfg.testSubset) images" : "all images")):")
                    for (p, name) in cfg.models.enumerated() {
                        print("  peer \(p)  " + name.padding(toLength: 10, withPad: " ", startingAt: 0) + String(format: "  top-1 %6.2f%%  top-5 %6.2f%%", 100 * e.top1[p], 100 * e.top5[p]))
                    }
                    if let name = trainer.method.teacherName, let t1 = e.teacherTop1, let t5 = e.teacherTop5 {
                        print("  \(name)" + String(format: "  top-1 %6.2f%%  top-5 %6.2f%%", 100 * t1, 100 * t5))
                    }
                }
            }
        }
    }
}
