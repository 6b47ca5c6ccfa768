/// Internal failure of one attempt, before it becomes a `CVMError` line.
enum TransportFailure: Error {
    case setup(String)
}
