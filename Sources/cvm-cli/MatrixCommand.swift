import ArgumentParser
import CVMMatrix
import CVMSupport
import Foundation

struct MatrixCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "matrix",
        abstract: "Show the confidential-VM families, TEEs and regions each cloud supports.",
        discussion: "The table every deploy checks vm_type × region × TEE against before uploading (providers/*.json, built into the binary)."
    )

    @Option(help: "Only this cloud: aws, gcp or azure.")
    var cloud: String?

    @Flag(help: "Print one JSON object.")
    var json = false

    func run() throws {
        try runReportingErrors {
            let matrix = try CVMMatrix.embedded()
            let clouds = try cloud.map { [try matrix.matrix(for: try CloudName(parsing: $0))] } ?? matrix.clouds
            if json {
                try printJSON(MatrixJSON(clouds: clouds))
                return
            }
            for (i, m) in clouds.enumerated() {
                if i > 0 { print("") }
                print("\(m.cloud):")
                for tee in TEE.allCases {
                    let families = m.families.filter { $0.tee == tee }
                    if families.isEmpty {
                        print("  \(tee): none")
                        continue
                    }
                    for f in families {
                        print("  \(tee)  \(f.family) (e.g. \(f.example))  \(m.regionKind)s: \(f.regions.joined(separator: ", "))")
                    }
                }
            }
        }
    }
}

struct MatrixJSON: Encodable {
    let clouds: [CloudMatrix]
}
