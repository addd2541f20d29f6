// Where the clipsearch API lives. Empty means "the origin that served this
// page" (the local server). On AWS the stack deploys this file with one line
// appended (clipsearch/page.py: config_js) that points the page at CloudFront's
// /api path on the same origin.
window.CLIPSEARCH_CONFIG = {
  apiBase: "",
  pageSize: 24,
};
