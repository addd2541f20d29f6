// Where the clipsearch API lives. Empty means "the origin that served this
// page" (the local server). When the page is hosted on S3/CloudFront, the
// deployment overwrites this file with the API Gateway URL.
window.CLIPSEARCH_CONFIG = {
  apiBase: "",
  pageSize: 24,
};
