// `distill train`: run an experiment from a YAML config, alone or under launch/run.
import ArgumentParser
import Collectives
import Foundation
import Training

struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Trains the peers of a YAML experiment config and writes config.yaml, metrics.jsonl and checkpoints.",
        discussion: """
        Examples:
          distill train configs/independent.yaml
          distill train configs/independent.yaml --set epochs=2 --set optimizer.lr=0.05 --out runs/try
          launch/run -np 2 -- train configs/independent.yaml --set 'models=[resnet8, resnet14]'
        Exit codes: 0 success, 2 a usage or config error (the message names the file, key and expected value),
        1 a runtime failure.
        """)

    @Argument(help: "The experiment config (YAML); see configs/ for documented examples.")
    var config: String

    @OptionGroup var overrides: ConfigOverrides

    @Option(help: "Output directory (overrides the config's `output`).")
    var out: String?

    @Flag(help: "Continue from the last complete checkpoint in the output directory (same config; epochs may grow).")
    var resume = false

    @Flag(help: "Continue from the output directory's last complete checkpoint if it has one, else start afresh (what launch/run --max-restarts passes on a restart). Rank 0's directory decides for every rank.")
    var resumeIfCheckpoint = false

    func validate() throws {
        if resume && resumeIfCheckpoint { throw ValidationError("give --resume or --resume-if-checkpoint, not both") }
    }

    func run() throws {
        var cfg = try overrides.load(config)
        if let o = out { cfg.output = o }
        try runOnWorld { comm in
            var resuming = resume
            if resumeIfCheckpoint {
                var found = [Double(comm.rank == 0 && (try? RunDirectory(cfg.output).readState()) != nil ? 1 : 0)]
                try comm.allReduce(&found, op: .sum)
                resuming = found[0] > 0
            }
            try Trainer(config: cfg, comm: comm).run(resume: resuming)
        }
    }
}
