// distill: the command-line entry point.
import ArgumentParser
import Collectives
import Foundation
import Training

/// The release this build is (`distill --version`).
let distillVersion = "0.5.0"

@main
struct Distill: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "distill",
        abstract: "Distributed knowledge distillation on CPUs (Open MPI + OpenBLAS).",
        version: "swift-distill \(distillVersion)",
        subcommands: [Train.self, Eval.self, Report.self, Methods.self, Bench.self, Demo.self, Inspect.self, SelfTest.self])
}

struct Demo: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Runs the demonstration on Fashion-MNIST: a teacher, a student alone, and the student distilled (kd).",
        discussion: """
        Uses configs/demo.yaml (20,000 training images, 3 epochs, the full test set): trains a ResNet-14 teacher,
        a ResNet-8 student alone, and the same student with Hinton KD from the teacher, then prints the three test
        accuracies. Runs are written under --out.
        """)

    @Option(help: "The base config.")
    var config = "configs/demo.yaml"

    @Option(help: "Directory for the three runs.")
    var out = "runs/demo"

    func run() throws {
        let comm = try MPICommunicator.world()
        func train(_ name: String, _ overrides: [String]) throws -> Float {
            print("== \(name)")
            var c = try TrainConfig.load(config, overrides: overrides)
            c.output = out + "/" + name
            let history = try Trainer(config: c, comm: comm).run()
            return history.last?.testTop1?.first ?? .nan
        }
        let teacher = try train("teacher-resnet14", ["model=resnet14"])
        let alone = try train("student-resnet8-alone", ["model=resnet8"])
        let kd = try train("student-resnet8-kd", ["model=resnet8", "method.name=kd", "method.teacher_model=resnet14",
            "method.teacher_checkpoint=\(try RunDirectory.checkpoint(at: out + "/teacher-resnet14").peer(0))"])
        print("""

        Fashion-MNIST test top-1 (\(config)):
          teacher  resnet14            \(String(format: "%.2f%%", 100 * teacher))
          student  resnet8 alone       \(String(format: "%.2f%%", 100 * alone))
          student  resnet8 + kd        \(String(format: "%.2f%%", 100 * kd))
        """)
        MPICommunicator.finalize()
    }
}

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Prints performance figures (benchmarks report; they never assert).",
        subcommands: [BenchEngine.self, BenchConv.self, BenchData.self, BenchComm.self, BenchStep.self])
}


/// Prints one JSON object on a line (through the encoder every JSON output of the project uses).
func printJSON<T: Encodable>(_ value: T) throws { print(String(decoding: try jsonLine(value), as: UTF8.self)) }

/// Loads an experiment config; a config error prints its message and exits with code 2.
func loadConfig(_ path: String, overrides: [String]) throws -> TrainConfig {
    do { return try TrainConfig.load(path, overrides: overrides) } catch let e as ConfigError {
        printError("error: \(e.message)")
        throw ExitCode(2)
    }
}

/// Runs `body` on the world communicator and finalizes MPI. A config error exits with code 2, any other error
/// with 1; with several ranks the failing rank aborts the whole job with the message.
func runOnWorld(_ body: (Communicator) throws -> Void) throws {
    let comm = try MPICommunicator.world()
    do {
        try body(comm)
    } catch let e as ConfigError {
        if comm.size > 1 { comm.abort("config error: \(e.message)", code: 2) }
        printError("error: \(e.message)")
        throw ExitCode(2)
    } catch {
        if comm.size > 1 { comm.abort("\(error)", code: 1) }
        printError("error: \(error)")
        throw ExitCode(1)
    }
    MPICommunicator.finalize()
}
