package bus

// OpenLeasesIn is openLeases, for tests of a bucket with a short TTL.
var OpenLeasesIn = openLeases
