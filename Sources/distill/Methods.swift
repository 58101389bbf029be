// `distill methods`: every method of the registry with its keys, defaults and documentation.
import ArgumentParser
import Distillation
import Foundation

struct Methods: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Lists the distillation methods (method.name) and each one's method.* keys with their defaults.")

    func run() throws {
        // One column for the key names, as wide as the longest.
        let width = MethodRegistry.all.flatMap(\.keys).map { "  method.\($0.name) ".count }.max() ?? 0
        for spec in MethodRegistry.all {
            var traits: [String] = []
            if spec.dataParallel { traits.append("one peer trains data-parallel on several ranks") }
            if spec.labelFree { traits.append("label-free: dataset.unlabeled images may join every batch") }
            print("\(spec.name): \(spec.summary)" + (traits.isEmpty ? "" : " (\(traits.joined(separator: "; ")))"))
            for k in spec.keys {
                let value = k.defaultValue.map { "default \($0)" } ?? (k.required ? "required" : "optional")
                print("  method.\(k.name)".padding(toLength: width, withPad: " ", startingAt: 0) + "\(k.expected), \(value): \(k.help)")
            }
        }
    }
}
