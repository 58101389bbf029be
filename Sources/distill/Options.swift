// Options several commands share, each declared once and included with @OptionGroup.
import ArgumentParser
import Training

/// `--set key.path=value`, repeatable: config overrides applied before the config is checked.
struct ConfigOverrides: ParsableArguments {
    @Option(name: .customLong("set"),
            help: ArgumentHelp("Override a config value, e.g. --set optimizer.lr=0.05 (repeatable; the value is read as YAML).",
                               valueName: "key.path=value"))
    var values: [String] = []

    /// The config at `path` with these overrides; a config error exits with code 2.
    func load(_ path: String) throws -> TrainConfig { try loadConfig(path, overrides: values) }
}

/// `--json`: one JSON object instead of a table.
struct OutputFormat: ParsableArguments {
    @Flag(help: "Print one JSON object instead of a table.")
    var json = false
}
