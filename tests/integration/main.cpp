#define BOOST_TEST_MODULE aicon_integration
#include <boost/test/unit_test.hpp>
