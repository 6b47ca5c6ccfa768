import Foundation

/// The Python side of the tests: sets up moto (IAM user, key, SigV4 enforced) and reads back
/// what was uploaded with boto3, so what we sent is judged by AWS's own SDK and moto.
public enum MotoHelperScript {
    public static let source = #"""
    import base64, hashlib, json, sys, urllib.request
    import boto3
    from botocore.config import Config

    def client(service, endpoint, creds, region):
        c = boto3.client(service, endpoint_url=endpoint, region_name=region,
                         aws_access_key_id=creds["id"], aws_secret_access_key=creds["secret"],
                         config=Config(retries={"max_attempts": 1}, s3={"addressing_style": "path"}))
        # moto re-signs with botocore and mis-hashes a bodiless request without this header.
        def add_content_sha256(request, **kwargs):
            if "x-amz-content-sha256" not in request.headers:
                body = request.body or b""
                if isinstance(body, str): body = body.encode()
                request.headers["x-amz-content-sha256"] = hashlib.sha256(body if isinstance(body, bytes) else b"").hexdigest()
        c.meta.events.register("before-sign", add_content_sha256)
        return c

    cmd = sys.argv[1]
    endpoint = sys.argv[2]
    if cmd == "setup":
        # Auth is off until reset-auth: create the user and key with any credentials.
        boot = {"id": "AKIAIOSFODNN7EXAMPLE", "secret": "bootstrap"}
        iam = client("iam", endpoint, boot, "us-east-1")
        iam.create_user(UserName="cvm")
        iam.put_user_policy(UserName="cvm", PolicyName="all",
                            PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
        key = iam.create_access_key(UserName="cvm")["AccessKey"]
        creds = {"id": key["AccessKeyId"], "secret": key["SecretAccessKey"]}
        req = urllib.request.Request(endpoint + "/moto-api/reset-auth", data=b"0", method="POST",
                                     headers={"Content-Type": "text/plain"})
        urllib.request.urlopen(req).read()
        print(json.dumps(creds))
    else:
        creds = json.loads(sys.argv[3])
        region = sys.argv[4]
        if cmd == "ebs-blocks":
            ebs = client("ebs", endpoint, creds, region)
            snap = sys.argv[5]
            listing = ebs.list_snapshot_blocks(SnapshotId=snap)
            out = {"volumeSize": listing["VolumeSize"], "blocks": []}
            for b in sorted(listing["Blocks"], key=lambda b: int(b["BlockIndex"])):
                got = ebs.get_snapshot_block(SnapshotId=snap, BlockIndex=int(b["BlockIndex"]), BlockToken=b["BlockToken"])
                data = got["BlockData"].read()
                digest = hashlib.sha256(data).digest()
                out["blocks"].append({"index": int(b["BlockIndex"]), "length": len(data), "sha256": digest.hex(),
                                      "checksumOK": got["Checksum"] == base64.b64encode(digest).decode(),
                                      "algorithm": got["ChecksumAlgorithm"], "dataLength": got["DataLength"]})
            ec2 = client("ec2", endpoint, creds, region)
            s = ec2.describe_snapshots(SnapshotIds=[snap])["Snapshots"][0]
            out["state"] = s["State"]
            out["tags"] = {t["Key"]: t["Value"] for t in s.get("Tags", [])}
            print(json.dumps(out))
        elif cmd == "s3-create-bucket":
            s3 = client("s3", endpoint, creds, region)
            if region == "us-east-1": s3.create_bucket(Bucket=sys.argv[5])
            else: s3.create_bucket(Bucket=sys.argv[5], CreateBucketConfiguration={"LocationConstraint": region})
            print("{}")
        elif cmd == "s3-get":
            s3 = client("s3", endpoint, creds, region)
            body = s3.get_object(Bucket=sys.argv[5], Key=sys.argv[6])["Body"].read()
            open(sys.argv[7], "wb").write(body)
            uploads = s3.list_multipart_uploads(Bucket=sys.argv[5]).get("Uploads", [])
            print(json.dumps({"size": len(body), "pendingUploads": len(uploads)}))
        elif cmd == "s3-uploads":
            s3 = client("s3", endpoint, creds, region)
            uploads = s3.list_multipart_uploads(Bucket=sys.argv[5]).get("Uploads", [])
            objects = s3.list_objects_v2(Bucket=sys.argv[5]).get("Contents", [])
            print(json.dumps({"pendingUploads": len(uploads), "objects": len(objects)}))
    """#
}
