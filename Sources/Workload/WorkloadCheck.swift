import CVMSupport

/// `cvm-cli workload check`: everything that would make the workload fail in the guest,
/// found on the user's machine instead. Errors block update-disk; warnings do not.
public enum WorkloadCheck {
    public static func run(folder: WorkloadFolder) -> [WorkloadDiagnostic] {
        var out: [WorkloadDiagnostic] = []
        ComposeCheck.run(folder, into: &out)
        PolicyCheck.run(folder, into: &out)
        ImageArchiveCheck.run(folder, into: &out)
        PrivateKeyCheck.run(folder, into: &out)
        for entry in folder.entries {
            if case .symlink(let target) = entry.kind,
               !WorkloadFolder.symlinkStaysInside(path: entry.path, target: target) {
                out.append(.init(.error, file: folder.display(entry.path),
                                 "is a symlink to '\(target)', outside the workload folder; the guest would not find it"))
            }
        }
        return out
    }

    public static func run(path: String) throws -> [WorkloadDiagnostic] {
        run(folder: try WorkloadFolder(path: path))
    }
}
