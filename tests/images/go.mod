// The images the tests run on the real node: a small model server and the pod sandbox's pause
// process. Static binaries with no dependencies, so an image is one file on an empty root.
module modelyard.dev/testimages

go 1.26.0
