// distill: the command-line entry point.
import ArgumentParser
import Foundation

@main
struct Distill: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "distill",
        abstract: "Distributed knowledge distillation on CPUs (Open MPI + OpenBLAS).",
        subcommands: [Bench.self, Demo.self, Inspect.self, SelfTest.self])
}

struct Demo: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Runs the demonstration experiment.")

    func run() throws {
        print("""
        nothing to demo yet: the training engine is built, the trainer is not.
        Try `distill bench engine` to measure the engine on this machine.
        """)
    }
}

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Prints performance figures (benchmarks report; they never assert).",
        subcommands: [BenchEngine.self, BenchConv.self, BenchData.self, BenchComm.self])
}

