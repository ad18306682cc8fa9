-- Task and schedule times travel as µs since the epoch (bigint). Multiplying an interval by
-- such a number goes through a double and rounds past ~2255 (9999-12-31T23:59:59.999999
-- became year 10000); whole seconds plus the µs remainder is exact over the whole range.

CREATE FUNCTION us_to_timestamptz(us bigint) RETURNS timestamptz
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN timestamptz 'epoch' + (us / 1000000) * interval '1 second' + (us % 1000000) * interval '1 microsecond';
