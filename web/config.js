// Where the API is. Empty: the same origin as this page (make local serves both). When the page is
// published to S3 behind CloudFront, the deployment writes the API's URL here.
window.MYI_API_URL = window.MYI_API_URL || "";
