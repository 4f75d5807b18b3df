#define BOOST_TEST_MODULE aicon_unit
#include <boost/test/unit_test.hpp>
