// distill: the command-line entry point.
import ArgumentParser
import Foundation

@main
struct Distill: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "distill",
        abstract: "Distributed knowledge distillation on CPUs (Open MPI + OpenBLAS).",
        subcommands: [Train.self, Bench.self, Demo.self, Inspect.self, SelfTest.self])
}

struct Demo: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Runs the demonstration: a short real training run on Fashion-MNIST (configs/demo.yaml).")

    @Option(help: "The demo config.")
    var config = "configs/demo.yaml"

    func run() throws {
        print("swift-distill demo: training a ResNet-8 on Fashion-MNIST (\(config))")
        try Train.parse([config]).run()
    }
}

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Prints performance figures (benchmarks report; they never assert).",
        subcommands: [BenchEngine.self, BenchConv.self, BenchData.self, BenchComm.self])
}

