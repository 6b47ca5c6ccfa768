import CVMCrypto
import CVMSupport
import Deploy
import DiskImage
import Foundation
import Transport

/// Where deploy-aws puts the disk before it becomes a snapshot.
public enum AWSUploadPath: Sendable, Equatable {
    /// EBS direct APIs: blocks straight into a snapshot (no bucket, no vmimport role).
    case ebs
    /// S3 multipart upload of the file as is, then EC2 ImportSnapshot (needs the `vmimport`
    /// service role and a bucket in the same region).
    case s3(bucket: String)
}

/// The S3 + ImportSnapshot path of deploy-aws.
struct AWSImportSnapshot {
    let session: AWSSession
    let ec2: EC2Client
    let options: AWSUploadOptions
    /// Wall-clock budget of the import task.
    var deadline: Double = 4 * 3600

    /// ImportSnapshot's disk format for a file, or a usage error naming what to convert to.
    static func importFormat(_ format: DiskFormat, path: String) throws -> String {
        switch format {
        case .vmdkStream: return "VMDK"
        case .vhdFixed, .vhdDynamic: return "VHD"
        case .raw: return "RAW"
        case .qcow2, .gcpTarGz:
            throw CVMError.usage("--disk \(path): ImportSnapshot takes VMDK, VHD or raw, not \(format.rawValue); convert it first (cvm-cli convert \(path) aws_disk.vmdk) or use --upload ebs, which reads any format")
        }
    }

    static func importParameters(bucket: String, key: String, format: String, vm: String, clientToken: String) -> [(String, String)] {
        [
            ("ClientToken", clientToken),
            ("Description", "cvm-cli deploy-aws \(vm)"),
            ("DiskContainer.Description", "cvm-cli deploy-aws \(vm)"),
            ("DiskContainer.Format", format),
            ("DiskContainer.UserBucket.S3Bucket", bucket),
            ("DiskContainer.UserBucket.S3Key", key),
        ] + EC2Client.tagSpecifications(["import-snapshot-task"], tags: [("Name", vm), (AWSDeployer.tagKey, vm)])
    }

    static func objectKey(vm: String, path: String) -> String {
        "cvm-cli/\(vm)/" + (path.split(separator: "/").last.map(String.init) ?? "disk")
    }

    /// Uploads and imports; returns (snapshot id, s3 URL, import task id, disk SHA-256).
    func run(_ state: DeployState, disk: DiskReader, bucket: String) throws -> (String, String, String, [UInt8]?) {
        let r = state.request
        let format = try Self.importFormat(disk.format, path: r.diskPath)
        let key = Self.objectKey(vm: r.vmName, path: r.diskPath)
        let s3 = S3MultipartUpload(session: session, options: options)
        let url = "s3://\(bucket)/\(key)"
        if r.dryRun {
            state.plan.add(PlannedCall(method: "PUT", endpoint: (try? s3.objectURL(bucket: bucket, key: key)) ?? url,
                                       operation: "s3:CreateMultipartUpload+UploadPart+CompleteMultipartUpload",
                                       parameters: [("Bucket", bucket), ("Key", key)], mutating: true))
            try ec2.write("ImportSnapshot", Self.importParameters(bucket: bucket, key: key, format: format, vm: r.vmName,
                                                                  clientToken: "dry-run"))
            return ("<imported snapshot>", url, "<import task>", nil)
        }
        // The virtual disk's digest on a second core while the file goes up as is.
        let digest = DigestBox()
        let reader = UncheckedSendable(disk)
        let done = DispatchSemaphore(value: 0)
        Thread {
            if let d = try? virtualDiskSHA256(reader.value) { digest.set(d) }
            done.signal()
        }.start()
        let (etag, parts, bytes) = try s3.upload(path: r.diskPath, bucket: bucket, key: key)
        state.log("uploaded \(formatBytes(bytes)) in \(parts) parts to \(url) (ETag \(etag))")
        done.wait()
        state.artifact.resources["s3_object"] = url
        try state.checkpoint()

        let token = String("\(r.vmName)-\(etag.filter { $0.isHexDigit })".prefix(64))
        let answer = try ec2.write("ImportSnapshot", Self.importParameters(bucket: bucket, key: key, format: format,
                                                                           vm: r.vmName, clientToken: token))
        guard let task = answer?.text("importTaskId") else { throw CVMError.io("EC2 ImportSnapshot: the answer has no importTaskId") }
        state.artifact.resources["import_task_id"] = task
        try state.checkpoint()
        let snapshot = try waitForImport(task, log: state.log)
        // Tag it so that cleanup and later reruns find it like an EBS-direct snapshot.
        try ec2.write("CreateTags", [("ResourceId.1", snapshot), ("Tag.1.Key", AWSDeployer.tagKey), ("Tag.1.Value", r.vmName),
                                     ("Tag.2.Key", "Name"), ("Tag.2.Value", r.vmName)])
        return (snapshot, url, task, digest.value)
    }

    /// Polls DescribeImportSnapshotTasks until the task completes, against a wall-clock deadline,
    /// logging its progress.
    func waitForImport(_ task: String, log: (String) -> Void) throws -> String {
        let start = monotonicSeconds()
        var pause = options.pollInterval.first
        var last = ""
        while true {
            let xml = try ec2.read("DescribeImportSnapshotTasks", [("ImportTaskId.1", task)],
                                   retrying: ["InvalidConversionTaskId.Malformed", "InvalidImportTaskId.NotFound"])
            let detail = Self.parseTask(xml, task: task)
            let line = "import \(task): \(detail.status)\(detail.progress.map { " \($0)%" } ?? "")\(detail.message.map { " (\($0))" } ?? "")"
            if line != last { log(line); last = line }
            switch detail.status {
            case "completed":
                guard let id = detail.snapshotID else { throw CVMError.io("EC2 import task \(task) completed without a snapshot id") }
                return id
            case "deleted", "deleting", "error", "failed":
                throw CVMError.io("EC2 ImportSnapshot task \(task) failed: \(detail.message ?? detail.status); check the vmimport role and the disk format")
            default:
                break
            }
            let elapsed = monotonicSeconds() - start
            if elapsed + pause > deadline {
                throw CVMError.io("EC2 ImportSnapshot task \(task) still '\(detail.status)' after \(Int(elapsed)) s; rerun deploy-aws later to pick it up")
            }
            if let cancelled = session.client.configuration.isCancelled, cancelled() {
                throw CVMError(.interrupted, "interrupted while EC2 imports \(task); it continues on AWS: rerun deploy-aws to pick it up")
            }
            Thread.sleep(forTimeInterval: pause)
            pause = min(pause * 2, options.pollInterval.maximum)
        }
    }

    struct TaskDetail: Equatable {
        var status: String
        var progress: String?
        var message: String?
        var snapshotID: String?
    }

    static func parseTask(_ xml: EC2XMLElement, task: String) -> TaskDetail {
        let item = xml.items("importSnapshotTaskSet").first { $0.text("importTaskId") == task }
        let d = item?.child("snapshotTaskDetail")
        return TaskDetail(status: d?.text("status") ?? "unknown", progress: d?.text("progress"),
                          message: d?.text("statusMessage"), snapshotID: d?.text("snapshotId"))
    }
}

/// SHA-256 of a virtual disk's content (holes as zeros), reading only stored ranges.
func virtualDiskSHA256(_ disk: DiskReader) throws -> [UInt8] {
    var hasher = SHA256Hasher()
    let chunk = 1 << 20
    var buffer = [UInt8](repeating: 0, count: chunk)
    let zeros = [UInt8](repeating: 0, count: chunk)
    var offset: UInt64 = 0
    for range in try disk.storedRanges() + [disk.virtualSize..<disk.virtualSize] {
        while offset < range.lowerBound {
            let n = Int(min(UInt64(chunk), range.lowerBound - offset))
            zeros.withUnsafeBytes { hasher.update(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
            offset += UInt64(n)
        }
        while offset < range.upperBound {
            let n = Int(min(UInt64(chunk), range.upperBound - offset))
            try buffer.withUnsafeMutableBytes { try disk.read(into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<n]), at: offset) }
            buffer.withUnsafeBytes { hasher.update(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
            offset += UInt64(n)
        }
    }
    return hasher.finalize()
}
